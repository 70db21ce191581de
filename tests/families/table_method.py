"""Contract rows of the families adapters/families/by_method.py declares."""

from __future__ import annotations

from .method import JOYIMAGE_EDIT, JOYIMAGE_EDIT_PLUS

ROWS: tuple = (JOYIMAGE_EDIT, JOYIMAGE_EDIT_PLUS)
