"""Contract rows of the families the grid mechanism of the family table serves (adapters/families/by_grid.py)."""

from __future__ import annotations

ROWS: tuple = ()
