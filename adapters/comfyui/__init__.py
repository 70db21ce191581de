"""ComfyUI's own model classes (`comfy.ldm.*`): one table of families, a replacement per kind of embedder (ids to
tables, grid to tables, a per-component method), two ways in (`dype_rope.patch(diffusion_model)` and the DyPE
node's ModelPatcher patch), and a table of refused models with their reasons. Nothing here imports ComfyUI:
its classes are matched by qualified name, so they are only ever matched inside a ComfyUI process."""

from .adapter import ADAPTERS, ComfyAdapter, comfy_adapter_class
from .families import FAMILIES, ComfyFamily
from .patcher import DYPE_KEY, patch_model_patcher
from .refused import NO_POSITIONS, REFUSED

__all__ = [
    "ADAPTERS", "DYPE_KEY", "FAMILIES", "NO_POSITIONS", "REFUSED", "ComfyAdapter", "ComfyFamily",
    "comfy_adapter_class", "patch_model_patcher",
]
