"""Contract rows of the families adapters/families/by_passed.py declares."""

from __future__ import annotations

ROWS: tuple = ()
