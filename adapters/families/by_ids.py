"""Family rows over the ids mechanism (adapters/mechanisms/ids.py)."""

from __future__ import annotations
