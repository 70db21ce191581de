"""Contract rows of the families adapters/families/by_anyflow.py declares."""

from __future__ import annotations

from .anyflow import ANYFLOW, ANYFLOW_FAR, ANYFLOW_V2V

ROWS: tuple = (ANYFLOW, ANYFLOW_V2V, ANYFLOW_FAR)
