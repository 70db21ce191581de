"""Float64 NumPy references of the DyPE frequency schedules, written from the paper's formulas (arXiv 2510.20766)
without the library's code, for the adapter tests to compare the tables the patched models really use."""

from __future__ import annotations

import math

import numpy as np

from dype_rope import DyPEConfig


def plain(dim: int, theta: float) -> np.ndarray:
    return np.array([theta ** (-2.0 * j / dim) for j in range(dim // 2)])


def kappa(t: float, cfg: DyPEConfig) -> float:
    return cfg.lambda_s * t**cfg.lambda_t


def frequencies(
    dim: int, theta: float, base_len: float, s: float, t: float, cfg: DyPEConfig
) -> tuple[np.ndarray, float]:
    """(omega [dim/2], mscale) of one axis of `dim` channels trained on `base_len` positions, now s times larger."""
    base = plain(dim, theta)
    if s <= 1 or cfg.method == "none":
        return base, 1.0
    k = kappa(t, cfg)
    if cfg.method == "pi":
        return base / max(1.0, s**k if cfg.dynamic else s), 1.0
    ntk_power = dim / (dim - 2) if dim > 2 else 1.0  # one pair turns at theta ** 0 = 1 whatever the base
    if cfg.method == "ntk":
        factor = s**ntk_power
        factor = factor**k if cfg.dynamic else factor
        return plain(dim, theta * max(1.0, factor)), 1.0
    assert cfg.method == "yarn"
    (b0, b1), (g0, g1) = cfg.beta, cfg.gamma
    if cfg.dynamic:
        if cfg.yarn_modulation == "power":
            b0, b1, g0, g1 = b0**k, b1**k, g0**k, g1**k
        else:
            b0, b1, g0, g1 = b0 * k, b1 * k, g0 * k, g1 * k

    def ramp(high_rot: float, low_rot: float) -> np.ndarray:
        def pair_turning(rho: float) -> float:  # the pair that turns rho times across base_len positions
            return math.inf if rho == 0 else dim * math.log(base_len / (2 * math.pi * rho)) / (2 * math.log(theta))

        lo = min(max(math.floor(min(pair_turning(high_rot), dim)), 0), dim // 2)
        hi = min(max(math.ceil(min(pair_turning(low_rot), dim)), 0), dim // 2)
        if lo == hi:
            hi += 0.001
        return np.clip((np.arange(dim // 2) - lo) / (hi - lo), 0.0, 1.0)

    rb, rg = ramp(b0, b1), ramp(g0, g1)
    mixed = (base / s) * rb + plain(dim, theta * s**ntk_power) * (1 - rb)
    return mixed * rg + base * (1 - rg), cfg.mscale_coeff * math.log(s) + 1.0
