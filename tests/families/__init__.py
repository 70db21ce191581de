"""The family table: one row per supported model family (tests/families/row.py gives the row type). The contract
suite (tests/test_contract.py, tests/test_fused_contract.py) runs every check on every row; a new family joins by
adding a row here."""

from __future__ import annotations

from .cogview4 import COGVIEW4
from .controlnets import ROWS as CONTROLNET_ROWS
from .embednd import CUSTOM, EMBEDND
from .flux import CHROMA, FLUX, FLUX2
from .hidream import HIDREAM
from .lumina2 import LUMINA2
from .qwen_image import QWEN_IMAGE
from .sd3 import SD3
from .table_anyflow import ROWS as ANYFLOW_ROWS
from .table_grid import ROWS as GRID_ROWS
from .table_ids import ROWS as IDS_ROWS
from .table_mrope import ROWS as MROPE_ROWS
from .table_method import ROWS as METHOD_ROWS
from .table_passed import ROWS as PASSED_ROWS
from .table_sections import ROWS as SECTIONS_ROWS
from .video import HUNYUAN_VIDEO, WAN
from .zimage import ZIMAGE

FAMILIES = (
    FLUX, CHROMA, FLUX2, QWEN_IMAGE, SD3, LUMINA2, ZIMAGE, HIDREAM, COGVIEW4, WAN, HUNYUAN_VIDEO, EMBEDND, CUSTOM,
    *IDS_ROWS, *GRID_ROWS, *PASSED_ROWS, *CONTROLNET_ROWS, *MROPE_ROWS, *SECTIONS_ROWS, *ANYFLOW_ROWS, *METHOD_ROWS,
)
FUSED_FAMILIES = tuple(row for row in FAMILIES if row.fused is not None)
