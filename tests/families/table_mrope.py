"""Contract rows of the families on the interleaved-MRoPE mechanism (adapters/families/by_cosmos3.py)."""

from __future__ import annotations

from .cosmos3 import COSMOS3

ROWS: tuple = (COSMOS3,)
