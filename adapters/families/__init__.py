"""The rows of the family table (adapters/table.py), one file per mechanism; importing this package
registers them."""

from . import by_angles, by_anyflow, by_cosmos3, by_grid, by_ids, by_method, by_passed  # noqa: F401
from . import by_rest, by_sana_wm, by_sections, video_pipelines  # noqa: F401  (each registers its rows)
from ..table import FAMILIES, REFUSED

# The library's own rows and refusals, as they stand once these modules are imported: the README's table
# documents these, not the rows a user's program registers later.
BUILTIN_FAMILIES = tuple(FAMILIES)
BUILTIN_REFUSED = dict(REFUSED)
