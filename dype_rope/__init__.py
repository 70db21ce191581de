"""dype_rope: DyPE (Dynamic Position Extrapolation, arXiv 2510.20766) for diffusion transformers.

    handle = dype_rope.patch(transformer)          # Dy-YaRN on the model's own timestep
    ...                                             # sample at any size
    handle.remove()                                 # the model is bit-for-bit the original again
"""

from .config import DyPEConfig
from .patching import PatchHandle, is_patched, patch, unpatch
from .pipelines import enable
from .rope import RopePlan, apply_rope, apply_rope_plan, build_plan, plain_plan, rope_tables
from .schedules import SCHEDULES, get_schedule, kappa, register_schedule
from .timestep import diffusion_time, diffusion_times

__version__ = "0.1.0"


def register_adapter(*model_classes, detect: bool = False, module_classes=()):
    """Register an adapter class for your own DiT (see dype_rope.adapters.Adapter and docs/adapters.md)."""
    from .adapters import register_adapter as _register

    return _register(*model_classes, detect=detect, module_classes=module_classes)


def __getattr__(name: str):
    """The family table's names (docs/families.md), imported on first use: `import dype_rope` stays light."""
    if name in ("Family", "Time", "register_family"):
        from .adapters import table

        return getattr(table, name)
    if name == "Ids":
        from .adapters.mechanisms.ids import Ids

        return Ids
    raise AttributeError(f"module 'dype_rope' has no attribute {name!r}")


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
