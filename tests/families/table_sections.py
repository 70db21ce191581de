"""Contract rows of the families adapters/families/by_sections.py declares."""

from __future__ import annotations

from .ideogram4 import ROWS

ROWS: tuple = ROWS
