"""Contract rows of the families the ids mechanism of the family table serves (adapters/families/by_ids.py)."""

from __future__ import annotations

from .angles_ernie import ROWS as ANGLES
from .ids_fibo2 import ROWS as FIBO2
from .ids_flux_like import ROWS as FLUX_LIKE
from .ids_matrices import ROWS as OTHER_FORMATS
from .shapes_nucleus import ROWS as SHAPES

ROWS: tuple = (*FLUX_LIKE, *OTHER_FORMATS, *FIBO2, *SHAPES, *ANGLES)
