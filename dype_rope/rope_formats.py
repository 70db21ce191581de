"""The same per-pair plan written in the table formats other model families consume.

`rope.rope_tables` gives real (cos, sin) tables [..., L, D]. Some families want one number per pair instead:
  complex "freqs_cis" [..., L, D/2] = mscale * exp(i * angle)       (Lumina2, Z-Image, Qwen-Image)
  rotation matrices  [..., L, D/2, 2, 2] = mscale * [[cos, -sin], [sin, cos]]   (BFL / ComfyUI EmbedND)
Each family computes its stock table with its own precision (angles in float64 or float32, cast before or
after the exponential), so the caller names the dtypes: with a plain plan in the family's precision the
result reproduces its stock table bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .rope import RopePlan


def rope_angles(positions: Tensor, plan: RopePlan) -> Tensor:
    """Angles [..., L, D/2] = position of each pair's axis * its frequency, in the plan's dtype.

    Positions pass through float32 first, as rope_tables does (exact for integer ids below 2**24).
    """
    inv_freq, _, pair_axis = plan
    pos = positions if positions.dtype == torch.float64 else positions.float()
    return pos.to(inv_freq.dtype).index_select(-1, pair_axis) * inv_freq.unsqueeze(-2)


def complex_table(positions: Tensor, plan: RopePlan, angle_dtype: torch.dtype | None = None) -> Tensor:
    """freqs_cis [..., L, D/2] = mscale * exp(i * angle): complex64 for float32 angles, complex128 for float64.

    angle_dtype: the dtype the angles are cast to before the exponential (None: the plan's dtype).
    """
    angles = rope_angles(positions, plan)
    if angle_dtype is not None:
        angles = angles.to(angle_dtype)
    return torch.polar(plan.mscale.unsqueeze(-2).to(angles.dtype).expand_as(angles), angles)


def rotation_matrices(positions: Tensor, plan: RopePlan) -> Tensor:
    """float32 rotation matrices [..., L, D/2, 2, 2] = mscale * [[cos, -sin], [sin, cos]] per pair."""
    angles = rope_angles(positions, plan)
    mscale = plan.mscale.unsqueeze(-2)
    cos, sin = angles.cos() * mscale, angles.sin() * mscale
    return torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2)).float()
