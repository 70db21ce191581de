"""The same per-pair plan written in the table formats other model families consume.

`rope.rope_tables` gives real (cos, sin) tables [..., L, D]. Some families want one number per pair instead:
  complex "freqs_cis" [..., L, D/2] = mscale * exp(i * angle)       (Lumina2, Z-Image, Qwen-Image)
  rotation matrices  [..., L, D/2, 2, 2] = mscale * [[cos, -sin], [sin, cos]]   (BFL / ComfyUI EmbedND)
Each family computes its stock table with its own precision (angles in float64 or float32, cast before or
after the exponential), so the caller names the dtypes: with a plain plan in the family's precision the
result reproduces its stock table bit for bit.

`rope_angles` and `rotation_matrices` take a plan and positions of any array library (docs/backends.md);
`complex_table` is torch's (the array API has no polar constructor).
"""

from __future__ import annotations

from typing import Any

try:
    import torch
    from torch import Tensor
except ImportError:  # the array-API functions below run without torch
    torch = None
    Tensor = Any

from .backend import namespace
from .rope import RopePlan, plan_positions


def rope_angles(positions, plan: RopePlan):
    """Angles [..., L, D/2] = position of each pair's axis * its frequency, in the plan's dtype.

    Positions pass through float32 first, as rope_tables does (exact for integer ids below 2**24).
    """
    inv_freq, _, pair_axis = plan
    xp = namespace(inv_freq)
    return xp.take(plan_positions(xp, positions, inv_freq.dtype), pair_axis, axis=-1) * inv_freq[..., None, :]


def complex_table(positions: Tensor, plan: RopePlan, angle_dtype: torch.dtype | None = None) -> Tensor:
    """freqs_cis [..., L, D/2] = mscale * exp(i * angle): complex64 for float32 angles, complex128 for float64.

    angle_dtype: the dtype the angles are cast to before the exponential (None: the plan's dtype).
    """
    angles = rope_angles(positions, plan)
    if angle_dtype is not None:
        angles = angles.to(angle_dtype)
    return torch.polar(plan.mscale.unsqueeze(-2).to(angles.dtype).expand_as(angles), angles)


def rotation_matrices(positions, plan: RopePlan):
    """float32 rotation matrices [..., L, D/2, 2, 2] = mscale * [[cos, -sin], [sin, cos]] per pair."""
    xp = namespace(plan.inv_freq)
    angles = rope_angles(positions, plan)
    mscale = plan.mscale[..., None, :]
    cos, sin = xp.cos(angles) * mscale, xp.sin(angles) * mscale
    matrices = xp.reshape(xp.stack([cos, -sin, sin, cos], axis=-1), (*cos.shape, 2, 2))
    return xp.astype(matrices, xp.float32)
