"""Float64 references of Vision-YaRN and of YaRN's two attention temperatures, written from the equations as
docs/method.md (M12, M16 - M19) states them, with ComfyUI-DyPE's constants as literals and without dype_rope's
code: numpy and the math module only.

  kappa(t)  = lambda_s * t ** lambda_t                     ComfyUI-DyPE: dype_scale = 2, dype_exponent = 2
  beta      = (1.25, 0.75), gamma = (16, 2)                 raised to kappa(t) ("power") or multiplied by it
  m(s)      = 0.1 ln s + 1  ("log")  or  1 + 0.1 ln(s) / sqrt(s)  ("log_sqrt")
  Vision-YaRN on one axis of an image whose largest ratio is s_g:
    PI part by the axis's own ratio max(1, s), NTK part by s_g, temperature 1 + (m(s_g) - 1) * min(1, t / t0) ** lambda_t

`clamp="comfyui-dype"` builds the ramp range as ComfyUI-DyPE (and the DyPE authors' code) does, low =
max(floor(c), 0) and high = min(ceil(c), d/2) with no other bound, so that a test can show where the two agree.
"""

from __future__ import annotations

import math

import numpy as np

BETA = (1.25, 0.75)
GAMMA = (16.0, 2.0)


def plain(dim: int, theta: float) -> np.ndarray:
    return np.array([theta ** (-2.0 * j / dim) for j in range(dim // 2)])


def temperature(s: float, form: str = "log") -> float:
    if s <= 1:
        return 1.0
    if form == "log_sqrt":
        return 1.0 + 0.1 * math.log(s) / math.sqrt(s)
    assert form == "log", form
    return 0.1 * math.log(s) + 1.0


def ramp(dim: int, theta: float, base_len: float, high_rot: float, low_rot: float, clamp: str = "dype_rope"):
    """YaRN's blend weight over the pairs for one threshold pair (the pair turning high_rot times starts it)."""

    def c(rho: float) -> float:  # the pair that turns rho times across base_len positions
        return math.inf if rho == 0 else dim * math.log(base_len / (2 * math.pi * rho)) / (2 * math.log(theta))

    lo_c, hi_c = c(high_rot), c(low_rot)
    if clamp == "comfyui-dype":
        lo = max(math.floor(lo_c), 0)
        hi = min(math.ceil(hi_c), dim // 2)
    else:
        lo = dim // 2 if math.isinf(lo_c) else min(max(math.floor(lo_c), 0), dim // 2)
        hi = dim // 2 if math.isinf(hi_c) else min(max(math.ceil(hi_c), 0), dim // 2)
    if lo == hi:
        hi += 0.001
    return np.clip((np.arange(dim // 2) - lo) / (hi - lo), 0.0, 1.0)


def thresholds(t: float, dynamic: bool, modulation: str, lambda_s: float, lambda_t: float):
    (b0, b1), (g0, g1) = BETA, GAMMA
    if not dynamic:
        return b0, b1, g0, g1
    k = lambda_s * t**lambda_t
    if modulation == "power":
        return b0**k, b1**k, g0**k, g1**k
    return b0 * k, b1 * k, g0 * k, g1 * k


def vision_yarn_axis(
    dim: int,
    theta: float,
    base_len: float,
    s_axis: float,
    s_global: float,
    t: float,
    *,
    lambda_s: float = 2.0,
    lambda_t: float = 2.0,
    modulation: str = "power",
    dynamic: bool = True,
    start_sigma: float = 1.0,
    form: str = "log",
    clamp: str = "dype_rope",
) -> tuple[np.ndarray, float]:
    """(omega [dim/2], mscale) of one rescaled axis of an image whose largest axis ratio is s_global."""
    base = plain(dim, theta)
    if s_global <= 1:
        return base, 1.0
    local = max(1.0, s_axis)
    power = dim / (dim - 2) if dim > 2 else 1.0
    ntk = plain(dim, theta * s_global**power)
    b0, b1, g0, g1 = thresholds(t, dynamic, modulation, lambda_s, lambda_t)
    rb = ramp(dim, theta, base_len, b0, b1, clamp)
    rg = ramp(dim, theta, base_len, g0, g1, clamp)
    mixed = (base / local) * rb + ntk * (1 - rb)
    omega = mixed * rg + base * (1 - rg)
    if not dynamic or start_sigma == 0:
        decay = 1.0
    else:
        decay = min(1.0, t / start_sigma) ** lambda_t
    return omega, 1.0 + (temperature(s_global, form) - 1.0) * decay


def yarn_axis(dim, theta, base_len, s, t, *, lambda_s=2.0, lambda_t=2.0, modulation="power", dynamic=True,
              form="log", clamp="dype_rope") -> tuple[np.ndarray, float]:
    """Plain (per-axis) YaRN with either temperature: the same blends with s on both parts, m(s) constant in t."""
    if s <= 1:
        return plain(dim, theta), 1.0
    omega, _ = vision_yarn_axis(dim, theta, base_len, s, s, t, lambda_s=lambda_s, lambda_t=lambda_t,
                                modulation=modulation, dynamic=dynamic, clamp=clamp)
    return omega, temperature(s, form)
