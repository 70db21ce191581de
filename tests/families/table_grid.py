"""Contract rows of the families the grid mechanism of the family table serves (adapters/families/by_grid.py)."""

from __future__ import annotations

from .grid import CHRONOEDIT, FRAMEPACK, HELIOS, GLM_IMAGE, HUNYUAN_IMAGE, HUNYUAN_VIDEO15, KANDINSKY5, KANDINSKY6, MOTIF_VIDEO, SANA_VIDEO, SKYREELS_V2, WAN_ANIMATE

from .sana_wm import SANA_WM

ROWS: tuple = (SKYREELS_V2, CHRONOEDIT, WAN_ANIMATE, SANA_VIDEO, HUNYUAN_VIDEO15, FRAMEPACK, HELIOS, MOTIF_VIDEO, HUNYUAN_IMAGE, GLM_IMAGE, KANDINSKY5, KANDINSKY6, SANA_WM)
