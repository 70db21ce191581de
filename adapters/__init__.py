"""Model adapters: the smallest replacement that makes a DiT family's position encoding follow DyPE.

One file per family; each registers itself by model class (looked up along the MRO) and, where a whole
family shares one position-encoding module, by a detector on the model. Register your own with
:func:`register_adapter` (see docs/adapters.md).
"""

from __future__ import annotations

from .base import Adapter, StepContext, find_adapter, register_adapter, registered_adapters
from . import flux  # noqa: F401  (registers the FLUX family)
from . import cogview4, hidream, sd3  # noqa: F401  (registers SD3, HiDream and CogView4)
from . import hunyuan_video, wan  # noqa: F401  (registers Wan and HunyuanVideo)
from . import embednd, flux2, lumina2, qwen_image, zimage  # noqa: F401  (FLUX.2, Qwen-Image, Lumina2, Z-Image, EmbedND)
from . import comfyui  # noqa: F401  (ComfyUI's own model classes, matched by qualified name)
from . import mflux  # noqa: F401  (mflux's MLX FLUX transformer, matched by qualified name; imports no mlx)
from . import families  # noqa: F401  (the rows of the declarative family table, adapters/table.py)
from .table import Family, Time, register_family

__all__ = [
    "Adapter", "Family", "StepContext", "Time", "find_adapter", "register_adapter", "register_family",
    "registered_adapters",
]
