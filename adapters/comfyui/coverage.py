"""Which of an imported ComfyUI's diffusion models DyPE patches, refuses (with the reason) or does not know.

The diffusion-model classes are the ones ComfyUI's own model wrappers build: every `unet_model=` in
comfy.model_base (plus BaseModel's default UNet), resolved in that module's namespace, so a class ComfyUI adds
later shows up here as "unknown" until it gets a row, a refusal, or a no-positions entry. Call this only in a
process that can import ComfyUI.
"""

from __future__ import annotations

import importlib
import inspect
import re

from ..base import qualified_name
from .adapter import rows_of
from .refused import NO_POSITIONS, refusal_of

_UNET_MODEL = re.compile(r"unet_model\s*=\s*([A-Za-z_][\w.]*)")


def diffusion_model_classes() -> list[type]:
    """Every diffusion-model class comfy.model_base builds, once each, in source order."""
    import comfy.model_base as model_base

    found: dict[str, type] = {}
    for name in _UNET_MODEL.findall(inspect.getsource(model_base)):
        if name.startswith("comfy."):
            module, _, attr = name.rpartition(".")
            obj = getattr(importlib.import_module(module), attr, None)
        else:  # a name model_base imported (UNetModel, StageC, ...); a parameter's own name resolves to nothing
            obj = vars(model_base).get(name)
        if isinstance(obj, type):
            found.setdefault(qualified_name(obj), obj)
    return list(found.values())


def class_status(cls: type) -> tuple[str, str]:
    """("supported", its rows) | ("refused", the reason) | ("unknown", why) for a diffusion-model class."""
    reason = refusal_of(cls)
    if reason is not None:
        return "refused", reason
    rows = rows_of(cls)
    if rows:
        return "supported", ", ".join(f.name for f in rows)
    return "unknown", "no DyPE row and no refusal for this class"


def comfy_coverage() -> list[dict]:
    """[{"host": "comfyui", "class": qualified name, "status": "supported" | "refused" | "unknown",
    "detail": the family rows or the reason}] for every ComfyUI diffusion model with a position encoding."""
    out = []
    for cls in diffusion_model_classes():
        name = qualified_name(cls)
        if name in NO_POSITIONS:
            continue
        status, detail = class_status(cls)
        out.append({"host": "comfyui", "class": name, "status": status, "detail": detail})
    return out


__all__ = ["class_status", "comfy_coverage", "diffusion_model_classes"]
