"""Pieces every schedule shares: plain RoPE frequencies, the DyPE scheduler kappa(t), NTK's base exponent,
YaRN's attention temperature."""

from __future__ import annotations

import torch
from torch import Tensor


def plain_inv_freq(dim: int, theta: float | Tensor, like: Tensor) -> Tensor:
    """inv_freq_j = theta ** (-2j / dim), j = 0 .. dim/2 - 1, in the dtype and device of `like`.

    Written exactly as diffusers' get_1d_rotary_pos_embed writes it (1 / theta ** (arange / dim)) so that an
    axis that is not rescaled reproduces the stock tables bit for bit. A tensor theta broadcasts: shape
    theta.shape + (dim/2,).
    """
    exponents = torch.arange(0, dim, 2, dtype=like.dtype, device=like.device) / dim
    if isinstance(theta, Tensor):
        theta = theta.unsqueeze(-1)
    return 1.0 / (theta**exponents)


def kappa(t: Tensor, lambda_s: float, lambda_t: float) -> Tensor:
    """DyPE's scheduler kappa(t) = lambda_s * t ** lambda_t (t = 1 pure noise, t = 0 data)."""
    return lambda_s * t**lambda_t


def ntk_exponent(dim: int) -> float:
    """NTK-aware base scaling theta' = theta * s ** (dim / (dim - 2)).

    With dim == 2 the single pair has inv_freq theta ** 0 = 1 whatever the base, so any exponent gives the
    same frequencies; 1.0 keeps the arithmetic finite.
    """
    return dim / (dim - 2) if dim > 2 else 1.0


def ones_like_batch(scale: Tensor, t: Tensor) -> Tensor:
    """An mscale of 1 with the broadcast shape of (scale, t)."""
    return torch.ones(torch.broadcast_shapes(scale.shape, t.shape), dtype=scale.dtype, device=scale.device)


def attention_temperature(scale: Tensor, cfg) -> Tensor:
    """YaRN's attention temperature m(s) on a rescaled axis (s > 1), 1 elsewhere (selected, not computed: bit exact).

    cfg.mscale "log":      m = c ln(s) + 1            (YaRN, the DyPE authors' code)
    cfg.mscale "log_sqrt": m = 1 + c ln(s) / sqrt(s)   (the form ComfyUI-DyPE gives its isotropic YaRN)
    with c = cfg.mscale_coeff (0.1).
    """
    log = torch.log(scale)
    if cfg.mscale == "log_sqrt":
        m = 1 + cfg.mscale_coeff * log / torch.sqrt(scale)
    else:
        m = cfg.mscale_coeff * log + 1
    return torch.where(scale > 1, m, torch.ones_like(scale))
