"""Contract rows of the families adapters/families/by_passed.py declares."""

from __future__ import annotations

from .ltx import LTX_VIDEO
from .ltx2 import LTX2, LTX2_SPLIT
from .passed import ALLEGRO, COGVIDEOX, COSMOS

ROWS: tuple = (COGVIDEOX, COSMOS, ALLEGRO, LTX_VIDEO, LTX2, LTX2_SPLIT)
