"""Position interpolation (Chen et al., 2023) and DyPE's Dy-PI (arXiv 2510.20766, Sec. 4).

PI divides positions by the size ratio s, i.e. inv_freq / s. Dy-PI divides by max(1, s ** kappa(t)):
full interpolation while noise dominates (t = 1), none at the end (t = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import kappa, ones_like_batch, plain_inv_freq


def pi(dim: int, theta: float, base_len: float, scale: Tensor, t: Tensor, cfg) -> tuple[Tensor, Tensor]:
    plain = plain_inv_freq(dim, theta, scale)
    factor = scale ** kappa(t, cfg.lambda_s, cfg.lambda_t) if cfg.dynamic else scale
    factor = torch.clamp_min(factor, 1.0).unsqueeze(-1)
    # s <= 1 must give plain RoPE bit for bit: select it instead of dividing by 1.
    inv_freq = torch.where(scale.unsqueeze(-1) > 1, plain / factor, plain)
    mscale = ones_like_batch(scale, t)
    return inv_freq.expand(*mscale.shape, dim // 2), mscale
