"""The rows of the family table (adapters/table.py), one file per mechanism; importing this package
registers them."""

from . import by_grid, by_ids, by_method, by_passed, by_rest  # noqa: F401  (each module registers its rows)
from ..table import FAMILIES, REFUSED

# The library's own rows and refusals, as they stand once these modules are imported: the README's table
# documents these, not the rows a user's program registers later.
BUILTIN_FAMILIES = tuple(FAMILIES)
BUILTIN_REFUSED = dict(REFUSED)
