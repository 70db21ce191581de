"""DyPE on a ComfyUI ModelPatcher, through ComfyUI's own extension points only.

The input patcher is cloned; the clone gets the replacement embedders as object patches (ComfyUI sets them
when it loads this clone and puts the originals back when it unloads it or loads another patcher) and an
`apply_model` wrapper that starts each call. Nothing is written onto the shared diffusion model, so the input
model, every other branch of the graph, weight offloading and LoRA patches behave exactly as without DyPE.
A second DyPE patch on a patcher that already has one replaces it (the later settings win).
"""

from __future__ import annotations

from typing import Any

from dype_rope.config import DyPEConfig

from .adapter import comfy_adapter_class
from .cogvideox import DyPECogVideoXEmbed
from .components import DyPEComponentsEmbed
from .embed import DyPEComfyEmbed
from .grid import DyPEGridEmbed
from .ltx import DyPELtxEmbed

# what a DyPE node puts in place
REPLACEMENTS = (DyPEComfyEmbed, DyPEGridEmbed, DyPEComponentsEmbed, DyPELtxEmbed, DyPECogVideoXEmbed)

DYPE_KEY = "dype_rope"  # the key of DyPE's wrapper among the patcher's apply_model wrappers
APPLY_MODEL = "apply_model"  # comfy.patcher_extension.WrappersMP.APPLY_MODEL


def patch_model_patcher(
    model_patcher: Any,
    cfg: DyPEConfig,
    base_grid: tuple[int, int] | None = None,
    aspect: str = "per-axis",
) -> Any:
    """A clone of `model_patcher` whose diffusion model follows DyPE with `cfg` on `base_grid` (tokens; None:
    the family's native grid)."""
    clone = model_patcher.clone()
    diffusion_model = clone.get_model_object("diffusion_model")
    adapter_cls = comfy_adapter_class(diffusion_model)
    prefix = "diffusion_model."
    # another DyPE node upstream: start again from the stock embedders it patched
    originals = {}
    for path in adapter_cls.family.embedders:
        current = clone.get_model_object(prefix + path)
        originals[path] = current.original if isinstance(current, REPLACEMENTS) else current
    clone.remove_wrappers_with_key(APPLY_MODEL, DYPE_KEY)
    adapter = adapter_cls(diffusion_model, cfg, base_grid, aspect, stock=originals)
    for path, replacement in adapter.embedders().items():
        clone.add_object_patch(prefix + path, replacement)
    clone.add_wrapper_with_key(APPLY_MODEL, DYPE_KEY, adapter.apply_model_wrapper)
    return clone
