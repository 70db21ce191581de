"""Dy-YaRN's two modulations do what docs/method.md says: "multiply" hands back plain RoPE at t = 0 and moves
every pair monotonically in t; "power" (ComfyUI-DyPE) keeps PI on the low-frequency pairs at t = 0 and is not
monotone, with the numbers of the table in docs/method.md. The reference is YaRN written again here in float64
from the paper's constants (M9 - M13), not the library's schedule."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dype_rope import DyPEConfig
from dype_rope.schedules import yarn

DOC = Path(__file__).resolve().parent.parent / "docs" / "method.md"
D, THETA, L, S = 56, 10000.0, 64.0, 4.0  # FLUX's row axis at 4096 px
BETA, GAMMA = (1.25, 0.75), (16.0, 2.0)


def reference(t: float, modulation: str, d=D, theta=THETA, base=L, s=S) -> np.ndarray:
    """omega^Y_j / omega_j for every pair, from (M9) - (M13) with the default kappa of each modulation."""
    j = np.arange(d // 2, dtype=np.float64)
    plain = theta ** (-2 * j / d)
    pi = plain / s
    ntk = (theta * s ** (d / (d - 2))) ** (-2 * j / d)
    k = (1.0 if modulation == "multiply" else 2.0) * t**2

    def threshold(x):
        return x * k if modulation == "multiply" else x**k

    def c(rho):
        return math.inf if rho == 0 else d * math.log(base / (2 * math.pi * rho)) / (2 * math.log(theta))

    def end(rho, rounding):  # a range end, clamped into [0, d/2] (c = +inf at rho = 0)
        v = c(rho)
        return d // 2 if math.isinf(v) else min(max(rounding(v), 0), d // 2)

    def ramp(a, b):
        low, high = end(threshold(a), math.floor), end(threshold(b), math.ceil)
        high = high + 0.001 if low == high else high
        return np.clip((j - low) / (high - low), 0, 1)

    rb, rg = ramp(*BETA), ramp(*GAMMA)
    f = pi * rb + ntk * (1 - rb)
    return (f * rg + plain * (1 - rg)) / plain


def library(t: float, modulation: str) -> np.ndarray:
    cfg = DyPEConfig(method="yarn", yarn_modulation=modulation)
    f64 = torch.float64
    inv, mscale = yarn(D, THETA, L, torch.tensor(S, dtype=f64), torch.tensor(t, dtype=f64), cfg)
    assert float(mscale) == pytest.approx(0.1 * math.log(S) + 1, rel=1e-15)  # (M12), constant in t
    plain = 1.0 / THETA ** (torch.arange(0, D, 2, dtype=f64) / D)  # diffusers' expression for plain RoPE
    return (inv / plain).numpy()


@pytest.mark.parametrize("modulation", ["multiply", "power"])
@pytest.mark.parametrize("t", [0.0, 0.05, 0.3, 0.5, 0.7345, 0.735, 0.9, 1.0])
def test_the_library_follows_the_equations(modulation, t):
    np.testing.assert_allclose(library(t, modulation), reference(t, modulation), rtol=1e-12)


def test_multiply_hands_back_plain_rope_at_the_end_and_moves_monotonically():
    np.testing.assert_array_equal(library(0.0, "multiply"), np.ones(D // 2))
    ratios = np.stack([library(t, "multiply") for t in np.linspace(0, 1, 401)])
    assert (np.diff(ratios, axis=0) <= 1e-15).all(), "a pair moved back towards plain RoPE as t grew"


def test_power_keeps_pi_above_c1_at_the_end():
    c1 = D * math.log(L / (2 * math.pi)) / (2 * math.log(THETA))
    j = np.arange(D // 2)
    expected = np.where(j <= c1, 1.0, 1.0 / S)
    np.testing.assert_allclose(library(0.0, "power"), expected, rtol=1e-15)


def test_power_is_not_monotone_in_t():
    before, after = library(0.7345, "power"), library(0.735, "power")
    assert after[8] > before[8] + 0.1  # pair 8 moves away from PI as t grows ...
    assert library(1.0, "power")[8] < after[8]  # ... and back towards it


def documented_table() -> list[list[float]]:
    text = DOC.read_text()
    section = text.split('`omega_j` with "power"', 1)[1]
    rows = re.findall(r"^\| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|$", section, flags=re.M)
    return [[float(v) for v in row] for row in rows]


def test_the_documented_power_table_is_what_the_library_computes():
    table = documented_table()
    assert len(table) == 5
    for t, *pairs in table:
        np.testing.assert_allclose(library(t, "power")[6:10], pairs, atol=5e-4)
