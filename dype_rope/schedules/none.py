"""Plain RoPE: no rescaling at any size or time (method="none")."""

from __future__ import annotations

from torch import Tensor

from ._common import ones_like_batch, plain_inv_freq


def plain(dim: int, theta: float, base_len: float, scale: Tensor, t: Tensor, cfg) -> tuple[Tensor, Tensor]:
    mscale = ones_like_batch(scale, t)
    return plain_inv_freq(dim, theta, scale).expand(*mscale.shape, dim // 2), mscale
