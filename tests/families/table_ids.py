"""Contract rows of the families the ids mechanism of the family table serves (adapters/families/by_ids.py)."""

from __future__ import annotations

ROWS: tuple = ()
