"""ComfyUI's own model classes (`comfy.ldm.*`): one table of families, one replacement embedder, two ways in
(`dype_rope.patch(diffusion_model)` and the DyPE node's ModelPatcher patch). Nothing here imports ComfyUI:
its classes are matched by qualified name, so they are only ever matched inside a ComfyUI process."""

from .adapter import ADAPTERS, ComfyAdapter, comfy_adapter_class
from .families import FAMILIES, ComfyFamily
from .patcher import DYPE_KEY, patch_model_patcher
from .refused import NO_POSITIONS, REFUSED

__all__ = ["ADAPTERS", "DYPE_KEY", "FAMILIES", "ComfyAdapter", "ComfyFamily", "NO_POSITIONS", "REFUSED", "comfy_adapter_class",
           "patch_model_patcher"]
