"""Contract rows of adapters/families/by_sections.py (the interleaved-MRoPE mechanism, adapters/mechanisms/mrope.py)."""

from __future__ import annotations

from .ideogram4 import ROWS

ROWS: tuple = ROWS
