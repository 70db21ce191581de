"""Float64 references of the DyPE frequency schedules and the RoPE tables they give, written from the paper's
formulas and constants (DyPE, arXiv 2510.20766, Sec. 4 and Eq. 15; YaRN's NTK-by-parts as the DyPE authors apply
it to images) without the library's code or its defaults: a wrong default in dype_rope fails a test here.

The constants are literals on purpose. They are the paper's and the authors' FLUX code's, as docs/method.md
(M4)-(M13) lists them:

  kappa(t) = lambda_s * t ** lambda_t; Dy-PI and Dy-NTK: lambda_s = lambda_t = 2; Dy-YaRN: lambda_s = 1,
             lambda_t = 2 (kappa = t**2), or 2, 2 with the ComfyUI-style "power" modulation;
  YaRN:      beta = (1.25, 0.75) (the PI / NTK blend), gamma = (16, 2) (the blend with plain RoPE),
             thresholds * kappa(t) for Dy-YaRN ("multiply"), thresholds ** kappa(t) for "power";
  mscale     m = 0.1 * ln(s) + 1 on every rescaled axis (YaRN's attention temperature), 1 elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BETA = (1.25, 0.75)
GAMMA = (16.0, 2.0)
MSCALE_COEFF = 0.1
# (lambda_s, lambda_t) of kappa(t) by method: Dy-PI and Dy-NTK 2, 2; Dy-YaRN 1, 2 (kappa = t**2), and 2, 2 when its
# thresholds are raised to kappa(t) ("power") instead of multiplied by it.
LAMBDAS = {"pi": (2.0, 2.0), "ntk": (2.0, 2.0), "yarn": (1.0, 2.0)}
LAMBDAS_POWER = {"yarn": (2.0, 2.0)}


def plain(dim: int, theta: float) -> np.ndarray:
    return np.array([theta ** (-2.0 * j / dim) for j in range(dim // 2)])


def kappa(t: float, method: str, modulation: str = "multiply", lambdas: tuple[float, float] | None = None) -> float:
    default = (LAMBDAS_POWER if modulation == "power" else {}).get(method, LAMBDAS[method])
    lambda_s, lambda_t = lambdas or default
    return lambda_s * t**lambda_t


def frequencies(
    dim: int,
    theta: float,
    base_len: float,
    s: float,
    t: float,
    method: str = "yarn",
    dynamic: bool = True,
    modulation: str = "multiply",
    lambdas: tuple[float, float] | None = None,
) -> tuple[np.ndarray, float]:
    """(omega [dim/2], mscale) of one axis of `dim` channels trained on `base_len` positions, now s times larger."""
    base = plain(dim, theta)
    if s <= 1 or method == "none":
        return base, 1.0
    k = kappa(t, method, modulation, lambdas)
    if method == "pi":
        return base / max(1.0, s**k if dynamic else s), 1.0
    ntk_power = dim / (dim - 2) if dim > 2 else 1.0  # one pair turns at theta ** 0 = 1 whatever the base
    if method == "ntk":
        factor = s**ntk_power
        factor = factor**k if dynamic else factor
        return plain(dim, theta * max(1.0, factor)), 1.0
    assert method == "yarn", method
    (b0, b1), (g0, g1) = BETA, GAMMA
    if dynamic:
        if modulation == "power":
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
    return mixed * rg + base * (1 - rg), MSCALE_COEFF * math.log(s) + 1.0


def axis_ratios(spans, base_lens, rescaled, aspect: str = "per-axis", spatial=None) -> list[float]:
    """Size ratio of every axis: span / base on the rescaled axes, 1 elsewhere; "isotropic" gives the spatial
    axes (default: every rescaled one) the largest of their ratios, video frames keep their own."""
    ratios = [span / base if axis in rescaled else 1.0 for axis, (span, base) in enumerate(zip(spans, base_lens))]
    if aspect == "isotropic":
        spatial = rescaled if spatial is None else spatial
        largest = max(ratios[a] for a in spatial)
        ratios = [largest if a in spatial else r for a, r in enumerate(ratios)]
    return ratios


def rope_angles(positions, axes, theta, scales, t, base_lens, **schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 angles [L, D/2] and mscale [D/2] of every pair, axes in order, for positions [L, n_axes]."""
    pos = torch.as_tensor(positions, dtype=torch.float64)
    angles, mscales = [], []
    for axis, (dim, s, base) in enumerate(zip(axes, scales, base_lens)):
        omega, m = frequencies(dim, theta, float(base), float(s), float(t), **schedule)
        angles.append(pos[:, axis, None] * torch.from_numpy(omega))
        mscales.append(torch.full((dim // 2,), m, dtype=torch.float64))
    return torch.cat(angles, dim=-1), torch.cat(mscales)


def rope_pairs(positions, axes, theta, scales, t, base_lens, **schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(m cos, m sin) [L, D/2] of every pair: what any RoPE table layout holds once read pair by pair."""
    angles, m = rope_angles(positions, axes, theta, scales, t, base_lens, **schedule)
    return angles.cos() * m, angles.sin() * m
