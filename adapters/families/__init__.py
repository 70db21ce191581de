"""The rows of the family table (adapters/table.py), one file per mechanism; importing this package
registers them."""

from . import by_grid, by_ids, by_passed, by_rest  # noqa: F401  (each module registers its rows)
