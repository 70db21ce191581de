"""Family rows over the grid mechanism (adapters/mechanisms/grid.py)."""

from __future__ import annotations
