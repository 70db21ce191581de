"""Position interpolation (Chen et al., 2023) and DyPE's Dy-PI (arXiv 2510.20766, Sec. 4).

PI divides positions by the size ratio s, i.e. inv_freq / s. Dy-PI divides by max(1, s ** kappa(t)):
full interpolation while noise dominates (t = 1), none at the end (t = 0).
"""

from __future__ import annotations

from ..backend import namespace
from ._common import kappa, ones_like_batch, plain_inv_freq


def pi(dim: int, theta: float, base_len: float, scale, t, cfg):
    xp = namespace(scale)
    plain = plain_inv_freq(dim, theta, scale)
    factor = scale ** kappa(t, cfg.lambda_s, cfg.lambda_t) if cfg.dynamic else scale
    factor = xp.clip(factor, min=1.0)[..., None]
    # s <= 1 must give plain RoPE bit for bit: select it instead of dividing by 1.
    inv_freq = xp.where(scale[..., None] > 1, plain / factor, plain)
    mscale = ones_like_batch(scale, t)
    return xp.broadcast_to(inv_freq, (*mscale.shape, dim // 2)), mscale
