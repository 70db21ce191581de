"""Vision-YaRN: YaRN's NTK-by-parts made aware of the image's aspect ratio (ComfyUI-DyPE's default method).

Plain YaRN treats each axis alone. Vision-YaRN couples them through the image's global ratio
s_g = max over the rescaled axes of their ratios (docs/method.md, M16 - M19):

  s_l      = max(1, s)                                  the axis's own ratio (at least 1)
  f        = pi_j * ramp_beta_j + ntk_j * (1 - ramp_beta_j)    pi_j = omega_j / s_l, ntk_j: NTK with s_g
  f        = f * ramp_gamma_j + plain_j * (1 - ramp_gamma_j)
  m(t)     = 1 + (m(s_g) - 1) * min(1, t / t_start) ** lambda_t      m(s_g): YaRN's temperature at s_g

Low frequencies (the pairs that turn less than once over the training grid) are interpolated by the axis's own
ratio, so each axis covers its own new extent; high frequencies take NTK with the global ratio on every axis,
so small-scale detail is treated the same way in both directions whatever the aspect ratio. The ramps are
YaRN's (yarn_ramp, both ends clamped into [0, dim/2]) with thresholds ** kappa(t) by default ("power", as
ComfyUI-DyPE), or * kappa(t) with yarn_modulation="multiply". The temperature holds its start value while
t > t_start (cfg.start_sigma) and decays to 1 at t = 0. While every rescaled axis is at or below its base
length (s_g <= 1) the result is plain RoPE bit for bit.
"""

from __future__ import annotations

from ..backend import broadcast_shapes, device, namespace
from ._common import attention_temperature, ntk_exponent, plain_inv_freq
from .yarn import yarn_ramp, yarn_thresholds


def temperature_decay(t, cfg):
    """min(1, t / t_start) ** lambda_t: 1 until t_start, 0 at t = 0 (any lambda_t > 0); 1 for the static method."""
    xp = namespace(t)
    if not cfg.dynamic or cfg.start_sigma == 0:  # host floats of the config: no tensor is read
        return xp.ones_like(t)
    return xp.clip(t / cfg.start_sigma, max=1.0) ** cfg.lambda_t


def vision_yarn(dim: int, theta: float, base_len: float, scale, t, cfg, *, global_scale=None):
    """One axis of Vision-YaRN. `global_scale` is the image's largest ratio (build_plan passes it); alone, the
    axis's own ratio stands for the image's. Written over the array API, like every built-in schedule."""
    xp = namespace(scale)
    s_g = scale if global_scale is None else xp.astype(global_scale, scale.dtype)
    plain = plain_inv_freq(dim, theta, scale)
    pi_f = plain / xp.clip(scale, min=1.0)[..., None]  # / 1 is exact: an axis below its base is not squeezed
    ntk_f = plain_inv_freq(dim, theta * xp.clip(s_g, min=1.0) ** ntk_exponent(dim), scale)
    b0, b1, g0, g1 = yarn_thresholds(t, cfg)
    ramp_b = yarn_ramp(dim, theta, base_len, b0, b1)
    ramp_g = yarn_ramp(dim, theta, base_len, g0, g1)
    f = pi_f * ramp_b + ntk_f * (1 - ramp_b)
    f = f * ramp_g + plain * (1 - ramp_g)
    start = attention_temperature(s_g, cfg)  # 1 where s_g <= 1
    mscale = 1 + (start - 1) * temperature_decay(t, cfg)
    batch = broadcast_shapes(scale.shape, t.shape, s_g.shape)
    rescaled = xp.broadcast_to(s_g > 1, batch)
    pairs = (*batch, dim // 2)
    inv_freq = xp.where(rescaled[..., None], xp.broadcast_to(f, pairs), xp.broadcast_to(plain, pairs))
    one = xp.ones((), dtype=scale.dtype, device=device(scale))
    mscale = xp.where(rescaled, xp.broadcast_to(mscale, batch), one)
    return inv_freq, mscale
