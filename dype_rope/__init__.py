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
