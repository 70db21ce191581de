"""Contract rows of the families adapters/families/by_passed.py declares."""

from __future__ import annotations

from .passed import COGVIDEOX, COSMOS

ROWS: tuple = (COGVIDEOX, COSMOS)
