"""dype_rope: DyPE (Dynamic Position Extrapolation, arXiv 2510.20766) for diffusion transformers.

    handle = dype_rope.patch(transformer)          # Dy-YaRN on the model's own timestep
    ...                                             # sample at any size
    handle.remove()                                 # the model is bit-for-bit the original again

The core (schedules, build_plan, plain_plan, rope_tables) needs numpy and array-api-compat only and computes
with torch, numpy, JAX, MLX or any array-API library (docs/backends.md); patching models imports torch (or
MLX, for mflux) when first used.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module defining it, imported on first use (PEP 562). `import dype_rope` then costs no
# torch import, so the `dype-rope` command starts inside its own Ctrl-C handling (a Ctrl-C while torch loads
# prints "interrupted", status 130) and answers --help and bad arguments at once.
_LAZY = {
    "DyPEConfig": ".config",
    "PatchHandle": ".patching", "is_patched": ".patching", "patch": ".patching", "unpatch": ".patching",
    "enable": ".pipelines",
    "RopePlan": ".rope", "apply_rope": ".rope", "apply_rope_plan": ".rope", "build_plan": ".rope",
    "plain_plan": ".rope", "rope_tables": ".rope",
    "SCHEDULES": ".schedules", "get_schedule": ".schedules", "kappa": ".schedules",
    "register_schedule": ".schedules",
    "diffusion_time": ".timestep", "diffusion_times": ".timestep",
    # the family table (docs/families.md)
    "Family": ".adapters.table", "Time": ".adapters.table", "register_family": ".adapters.table",
    "Ids": ".adapters.mechanisms.ids",
}

if TYPE_CHECKING:  # what static tools see: the same names, imported eagerly
    from .config import DyPEConfig
    from .patching import PatchHandle, is_patched, patch, unpatch
    from .pipelines import enable
    from .rope import RopePlan, apply_rope, apply_rope_plan, build_plan, plain_plan, rope_tables
    from .schedules import SCHEDULES, get_schedule, kappa, register_schedule
    from .timestep import diffusion_time, diffusion_times


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        # a submodule read as an attribute (dype_rope.rope.rope_tables after `import dype_rope`), as it could
        # when this file imported them all
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'dype_rope' has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def register_adapter(*model_classes, detect: bool = False, module_classes=()):
    """Register an adapter class for your own DiT (see dype_rope.adapters.Adapter and docs/adapters.md)."""
    from .adapters import register_adapter as _register

    return _register(*model_classes, detect=detect, module_classes=module_classes)


__all__ = [
    "DyPEConfig",
    "PatchHandle",
    "RopePlan",
    "SCHEDULES",
    "apply_rope",
    "apply_rope_plan",
    "build_plan",
    "diffusion_time",
    "diffusion_times",
    "enable",
    "Family",
    "Ids",
    "Time",
    "register_family",
    "get_schedule",
    "is_patched",
    "kappa",
    "patch",
    "plain_plan",
    "register_adapter",
    "register_schedule",
    "rope_tables",
    "unpatch",
]
