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
"""

from __future__ import annotations

from typing import Any, Callable

from ._common import kappa, plain_inv_freq
from .none import plain
from .ntk import ntk
from .pi import pi
from .yarn import yarn, yarn_ramp

Schedule = Callable[..., "tuple[Any, Any]"]

SCHEDULES: dict[str, Schedule] = {"none": plain, "pi": pi, "ntk": ntk, "yarn": yarn}


def register_schedule(name: str, fn: Schedule, *, overwrite: bool = False) -> Schedule:
    """Make `fn` available as `method=name` everywhere (patch(), DyPEConfig, the kernels' plans)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"schedule name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"schedule {name!r} must be callable, got {type(fn).__name__}")
    if name in SCHEDULES and not overwrite:
        raise ValueError(f"schedule {name!r} is already registered; pass overwrite=True to replace it")
    SCHEDULES[name] = fn
    return fn


def get_schedule(name: str) -> Schedule:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}: expected one of {sorted(SCHEDULES)}") from None


__all__ = [
    "SCHEDULES",
    "Schedule",
    "get_schedule",
    "kappa",
    "ntk",
    "pi",
    "plain",
    "plain_inv_freq",
    "register_schedule",
    "yarn",
    "yarn_ramp",
]
