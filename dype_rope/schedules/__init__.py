"""Registry of timestep-conditioned RoPE frequency schedules.

A schedule is a pure function

    schedule(dim, theta, base_len, scale, t, cfg) -> (inv_freq, mscale)

for one RoPE axis of `dim` channels with base `theta`, trained on `base_len` tokens, now spanning
`scale` times as many (a float array), at diffusion time `t` (a float array, 1 = noise, 0 = data),
with settings `cfg` (:class:`dype_rope.DyPEConfig`). `scale` and `t` broadcast to a batch shape S;
inv_freq has shape S + (dim/2,) and mscale (the attention temperature multiplied into cos and sin) S.
The arithmetic runs in the dtype of `scale` (float64 on every device that has it).

The built-in schedules are written over the array API (docs/backends.md): `scale` and `t` may be arrays of
torch, numpy, JAX, MLX or any array-API library, and the results are arrays of that library. A schedule written
with torch calls keeps working on torch tensors.

A schedule that couples the axes of an image (vision_yarn) declares a keyword-only parameter `global_scale`:
build_plan then passes it the image's largest ratio over the rescaled axes (shape S), and gives the axes it
does not rescale plain RoPE without calling the schedule on them.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ._common import attention_temperature, kappa, plain_inv_freq
from .none import plain
from .ntk import ntk
from .pi import pi
from .vision_yarn import vision_yarn
from .yarn import yarn, yarn_ramp

Schedule = Callable[..., "tuple[Any, Any]"]

SCHEDULES: dict[str, Schedule] = {"none": plain, "pi": pi, "ntk": ntk, "yarn": yarn, "vision_yarn": vision_yarn}
# Names of the schedules that take `global_scale`, decided once when they are registered: build_plan reads this
# set of strings, which torch.compile traces as a constant (inspecting a function there would break the graph).
GLOBAL_SCALE_SCHEDULES: set[str] = {"vision_yarn"}


def _takes_global_scale(fn: Schedule) -> bool:
    try:
        parameter = inspect.signature(fn).parameters.get("global_scale")
    except (TypeError, ValueError):  # a callable without a signature: it gets the per-axis call only
        return False
    return parameter is not None and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)


def register_schedule(name: str, fn: Schedule, *, overwrite: bool = False) -> Schedule:
    """Make `fn` available as `method=name` everywhere (patch(), DyPEConfig, the kernels' plans)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"schedule name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"schedule {name!r} must be callable, got {type(fn).__name__}")
    if name in SCHEDULES and not overwrite:
        raise ValueError(f"schedule {name!r} is already registered; pass overwrite=True to replace it")
    SCHEDULES[name] = fn
    if _takes_global_scale(fn):
        GLOBAL_SCALE_SCHEDULES.add(name)
    else:
        GLOBAL_SCALE_SCHEDULES.discard(name)
    return fn


def takes_global_scale(name: str) -> bool:
    """Whether the schedule registered as `name` couples the axes (receives build_plan's global_scale)."""
    return name in GLOBAL_SCALE_SCHEDULES


def get_schedule(name: str) -> Schedule:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}: expected one of {sorted(SCHEDULES)}") from None


__all__ = [
    "GLOBAL_SCALE_SCHEDULES",
    "SCHEDULES",
    "Schedule",
    "attention_temperature",
    "get_schedule",
    "kappa",
    "ntk",
    "pi",
    "plain",
    "plain_inv_freq",
    "register_schedule",
    "takes_global_scale",
    "vision_yarn",
    "yarn",
    "yarn_ramp",
]
