"""Pieces every schedule shares: plain RoPE frequencies, the DyPE scheduler kappa(t), NTK's base exponent,
YaRN's attention temperature.

Written over the array API (dype_rope.backend, docs/backends.md): `like`, `scale` and `t` are arrays of any
supported library, and the results are arrays of that library in their dtype and on their device.
"""

from __future__ import annotations

from ..backend import broadcast_shapes, device, namespace


def plain_inv_freq(dim: int, theta, like):
    """inv_freq_j = theta ** (-2j / dim), j = 0 .. dim/2 - 1, in the dtype and device of `like`.

    Written exactly as diffusers' get_1d_rotary_pos_embed writes it (1 / theta ** (arange / dim)) so that an
    axis that is not rescaled reproduces the stock tables bit for bit. An array theta broadcasts: shape
    theta.shape + (dim/2,).
    """
    xp = namespace(like)
    exponents = xp.arange(0, dim, 2, dtype=like.dtype, device=device(like)) / dim
    if not isinstance(theta, (int, float)):
        theta = theta[..., None]
    return 1.0 / (theta**exponents)


def kappa(t, lambda_s: float, lambda_t: float):
    """DyPE's scheduler kappa(t) = lambda_s * t ** lambda_t (t = 1 pure noise, t = 0 data)."""
    return lambda_s * t**lambda_t


def ntk_exponent(dim: int) -> float:
    """NTK-aware base scaling theta' = theta * s ** (dim / (dim - 2)).

    With dim == 2 the single pair has inv_freq theta ** 0 = 1 whatever the base, so any exponent gives the
    same frequencies; 1.0 keeps the arithmetic finite.
    """
    return dim / (dim - 2) if dim > 2 else 1.0


def ones_like_batch(scale, t):
    """An mscale of 1 with the broadcast shape of (scale, t)."""
    xp = namespace(scale)
    return xp.ones(broadcast_shapes(scale.shape, t.shape), dtype=scale.dtype, device=device(scale))


def attention_temperature(scale, cfg):
    """YaRN's attention temperature m(s) on a rescaled axis (s > 1), 1 elsewhere (selected, not computed: bit exact).

    cfg.mscale "log":      m = c ln(s) + 1            (YaRN, the DyPE authors' code)
    cfg.mscale "log_sqrt": m = 1 + c ln(s) / sqrt(s)   (the form ComfyUI-DyPE gives its isotropic YaRN)
    with c = cfg.mscale_coeff (0.1).
    """
    xp = namespace(scale)
    log = xp.log(scale)
    if cfg.mscale == "log_sqrt":
        m = 1 + cfg.mscale_coeff * log / xp.sqrt(scale)
    else:
        m = cfg.mscale_coeff * log + 1
    return xp.where(scale > 1, m, xp.ones_like(scale))
