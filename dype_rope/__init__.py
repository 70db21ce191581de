"""dype_rope: DyPE (Dynamic Position Extrapolation, arXiv 2510.20766) for diffusion transformers.

    handle = dype_rope.patch(transformer)          # Dy-YaRN on the model's own timestep
    ...                                             # sample at any size
    handle.remove()                                 # the model is bit-for-bit the original again

The core (schedules, build_plan, plain_plan, rope_tables) needs numpy and array-api-compat only and computes
with torch, numpy, JAX, MLX or any array-API library (docs/backends.md); patching models imports torch (or
MLX, for mflux) when first used.
"""

from importlib import import_module

from .config import DyPEConfig
from .rope import RopePlan, apply_rope, apply_rope_plan, build_plan, plain_plan, rope_tables
from .schedules import SCHEDULES, get_schedule, kappa, register_schedule

__version__ = "0.1.0"

# Imported on first use, so that `import dype_rope` works without torch.
_LAZY = {
    "PatchHandle": ".patching", "is_patched": ".patching", "patch": ".patching", "unpatch": ".patching",
    "enable": ".pipelines", "diffusion_time": ".timestep", "diffusion_times": ".timestep",
    # the family table (docs/families.md)
    "Family": ".adapters.table", "Time": ".adapters.table", "register_family": ".adapters.table",
    "Ids": ".adapters.mechanisms.ids",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'dype_rope' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


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
