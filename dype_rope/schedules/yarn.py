"""YaRN's NTK-by-parts as the DyPE authors apply it to images, and Dy-YaRN (arXiv 2510.20766, Sec. 4.3).

Per axis of `dim` channels with base token count L (the training grid on that axis) and size ratio s:

  c(rho)   = dim * ln(L / (2 pi rho)) / (2 ln theta)     pair index that turns rho times over L tokens
  range    = (clamp(floor(c(a)), 0, dim/2), clamp(ceil(c(b)), 0, dim/2)), high += 0.001 if equal
  ramp_j   = clamp((j - low) / (high - low), 0, 1)
  f        = pi_j * ramp_beta_j + ntk_j * (1 - ramp_beta_j)        beta = (1.25, 0.75)
  f        = f * ramp_gamma_j + plain_j * (1 - ramp_gamma_j)        gamma = (16, 2)
  mscale   = 0.1 ln s + 1, or 1 + 0.1 ln(s) / sqrt(s) with mscale="log_sqrt"   (constant in t)

Dy-YaRN multiplies the four thresholds by kappa(t) (default kappa = t**2); yarn_modulation="power" raises
them to kappa(t) instead (ComfyUI-DyPE's formula, default kappa = 2 t**2). "power" is a schedule of its own, not
a fading strength: at t = 0 its thresholds are all 1, so pairs past c(1) keep PI, and it is not monotone in t
(docs/method.md, M13). What follows about t -> 0 holds for "multiply". The authors' code clamps `low` into [0, dim - 1] but `high` into
[0, dim / 2]; at very small t that inverts the ramp (every channel flips to PI) and at t = 0 it divides by
zero. Clamping both ends into [0, dim / 2] reproduces their numbers wherever theirs is not inverted and
tends continuously to plain RoPE as t -> 0; at t = 0 the thresholds are 0, c = +inf, both ends sit at
dim / 2, every ramp is 0 and the result is plain RoPE exactly.
"""

from __future__ import annotations

import math

from ..backend import broadcast_shapes, device, quiet_infinities, namespace
from ._common import attention_temperature, kappa, ntk_exponent, plain_inv_freq


def yarn_ramp(dim: int, theta: float, base_len: float, high_rot, low_rot):
    """The blend weight ramp_j for a threshold pair; shape broadcast(high_rot, low_rot) + (dim/2,)."""
    xp = namespace(high_rot, low_rot)
    half = dim // 2

    def index_of(rho):
        # rho = 0 (t = 0) gives +inf, which the clamp below turns into dim/2: no NaN on the way.
        return quiet_infinities(xp, lambda: dim * xp.log(base_len / (2 * math.pi * rho)) / (2 * math.log(theta)))

    low = xp.clip(xp.floor(index_of(high_rot)), 0, half)
    high = xp.clip(xp.ceil(index_of(low_rot)), 0, half)
    high = xp.where(low == high, high + 0.001, high)
    j = xp.arange(half, dtype=high_rot.dtype, device=device(high_rot))
    return xp.clip((j - low[..., None]) / (high - low)[..., None], 0, 1)


def yarn_thresholds(t, cfg):
    (b0, b1), (g0, g1) = cfg.beta, cfg.gamma
    if not cfg.dynamic:
        one = namespace(t).ones_like(t)
        return b0 * one, b1 * one, g0 * one, g1 * one
    k = kappa(t, cfg.lambda_s, cfg.lambda_t)
    if cfg.yarn_modulation == "power":
        return b0**k, b1**k, g0**k, g1**k
    return b0 * k, b1 * k, g0 * k, g1 * k


def yarn(dim: int, theta: float, base_len: float, scale, t, cfg):
    xp = namespace(scale)
    plain = plain_inv_freq(dim, theta, scale)
    s = scale[..., None]
    pi_f = plain / s
    ntk_f = plain_inv_freq(dim, theta * scale ** ntk_exponent(dim), scale)
    b0, b1, g0, g1 = yarn_thresholds(t, cfg)
    ramp_b = yarn_ramp(dim, theta, base_len, b0, b1)
    ramp_g = yarn_ramp(dim, theta, base_len, g0, g1)
    f = pi_f * ramp_b + ntk_f * (1 - ramp_b)
    f = f * ramp_g + plain * (1 - ramp_g)
    mscale = attention_temperature(scale, cfg)
    batch = broadcast_shapes(scale.shape, t.shape)
    inv_freq = xp.broadcast_to(xp.where(s > 1, f, plain), (*batch, dim // 2))
    return inv_freq, xp.broadcast_to(mscale, batch)
