"""Contract rows of the families adapters/families/by_method.py declares."""

from __future__ import annotations

from .method import JOYIMAGE_EDIT, JOYIMAGE_EDIT_PLUS
from .wan_animate2 import WAN_ANIMATE2

ROWS: tuple = (JOYIMAGE_EDIT, JOYIMAGE_EDIT_PLUS, WAN_ANIMATE2)
