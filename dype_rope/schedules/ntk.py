"""NTK-aware base scaling and DyPE's Dy-NTK (arXiv 2510.20766, Eq. 15).

NTK:    theta' = theta * s ** (dim / (dim - 2)).
Dy-NTK: theta' = theta * max(1, (s ** (dim / (dim - 2))) ** kappa(t)).
No attention temperature (mscale = 1), as in the authors' code.
"""

from __future__ import annotations

from ..backend import namespace
from ._common import kappa, ntk_exponent, ones_like_batch, plain_inv_freq


def ntk(dim: int, theta: float, base_len: float, scale, t, cfg):
    xp = namespace(scale)
    plain = plain_inv_freq(dim, theta, scale)
    factor = scale ** ntk_exponent(dim)
    if cfg.dynamic:
        factor = factor ** kappa(t, cfg.lambda_s, cfg.lambda_t)
    new_theta = theta * xp.clip(factor, min=1.0)
    inv_freq = xp.where(scale[..., None] > 1, plain_inv_freq(dim, new_theta, scale), plain)
    mscale = ones_like_batch(scale, t)
    return xp.broadcast_to(inv_freq, (*mscale.shape, dim // 2)), mscale
