"""Plain RoPE: no rescaling at any size or time (method="none")."""

from __future__ import annotations

from ..backend import namespace
from ._common import ones_like_batch, plain_inv_freq


def plain(dim: int, theta: float, base_len: float, scale, t, cfg):
    xp = namespace(scale)
    mscale = ones_like_batch(scale, t)
    return xp.broadcast_to(plain_inv_freq(dim, theta, scale), (*mscale.shape, dim // 2)), mscale
