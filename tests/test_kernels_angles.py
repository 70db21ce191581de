"""The kernels' float32-only angles against float64: cos / sin within 4e-7 at every position 0..65535 (the
measured worst case is 3.7e-7, docs/kernels.md), within 6e-7 at fractional float64 positions (measured 5.2e-7).

The angle math (kernels/_pairs.py: fraction_of_turn, cos_sin_of_turn) runs here under the Triton interpreter
on a [positions, pairs] tile; it uses only float32 operations whose results the GPU reproduces (exact
products and reductions, then a fixed polynomial), so this bounds the compiled kernels' angles too. The
reference is float64 cos / sin of pos * inv_freq, written from the definition.
"""

from __future__ import annotations

import math

import pytest
import torch
import triton
import triton.language as tl

from dype_rope import apply_rope_plan
from dype_rope.kernels import rope_qk
from dype_rope.kernels._pairs import cos_sin_of_turn, fraction_of_turn, kernel_plan, kernel_positions
from kernel_reference import F64, dype_plan

# Just above the documented worst cases (docs/kernels.md), not loose: a kernel change that doubles the error fails.
TOL = 4e-7  # whole positions: 3.7e-7 measured
FRACTIONAL_TOL = 6e-7  # fractional float64 positions, whose float32 remainder adds one more rounding: 5.2e-7
ALL_POSITIONS = torch.arange(65536, dtype=torch.float32)


@triton.jit
def angles_kernel(POS, POS_LO, PLAN, COS, SIN, N, D_HALF: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_P: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    p = tl.arange(0, BLOCK_P)[None, :]
    pm = p < D_HALF
    pos = tl.load(POS + n, mask=n < N, other=0.0)
    pos_lo = tl.load(POS_LO + n, mask=n < N, other=0.0)
    f1 = tl.load(PLAN + p, mask=pm, other=0.0)
    f2 = tl.load(PLAN + D_HALF + p, mask=pm, other=0.0)
    f3 = tl.load(PLAN + 2 * D_HALF + p, mask=pm, other=0.0)
    cos, sin = cos_sin_of_turn(fraction_of_turn(pos, pos_lo, f1, f2, f3))
    tl.store(COS + n * D_HALF + p, cos, mask=(n < N) & pm)
    tl.store(SIN + n * D_HALF + p, sin, mask=(n < N) & pm)


def kernel_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, D/2] float32 cos / sin of the kernels' angle math for 1-d positions (any dtype) and inv_freq."""
    pos, pos_lo = kernel_positions(positions)
    pos_lo = torch.zeros_like(pos) if pos_lo is None else pos_lo
    plan = kernel_plan(inv_freq, torch.ones_like(inv_freq))
    n, d_half = pos.shape[0], inv_freq.shape[0]
    cos, sin = (torch.empty(n, d_half) for _ in range(2))
    block_n = 8192
    angles_kernel[(triton.cdiv(n, block_n),)](pos, pos_lo, plan, cos, sin, n, D_HALF=d_half, BLOCK_N=block_n,
                                              BLOCK_P=triton.next_power_of_2(d_half))
    return cos, sin


def plain_rope_inv_freq(dim: int, theta: float = 10000.0) -> torch.Tensor:
    """theta^(-2j/dim), float64: the RoPE of the paper, fastest pair at one radian per position."""
    return theta ** (-torch.arange(0, dim, 2, dtype=F64) / dim)


def max_error(positions, inv_freq, cos, sin) -> float:
    angles = positions.to(F64)[:, None] * inv_freq.to(F64)[None, :]
    return max((cos.to(F64) - angles.cos()).abs().max().item(), (sin.to(F64) - angles.sin()).abs().max().item())


@pytest.mark.parametrize(
    "inv_freq",
    [plain_rope_inv_freq(128), plain_rope_inv_freq(56), dype_plan(axes=(16, 56, 56), scales=(1.0, 4.0, 4.0),
                                                                  t=0.5).inv_freq],
    ids=["rope-128", "rope-56", "dype-yarn-flux"],
)
def test_cos_sin_within_4e_7_of_float64_at_every_position_up_to_65535(inv_freq):
    cos, sin = kernel_cos_sin(ALL_POSITIONS, inv_freq)
    err = max_error(ALL_POSITIONS, inv_freq, cos, sin)
    assert err < TOL, f"worst cos / sin error {err:.3g}"


def test_a_plain_float32_angle_product_would_fail_the_same_bound():
    """The bound is not loose: cos / sin of the float32 product pos * float32(inv_freq) miss it by far."""
    inv_freq = plain_rope_inv_freq(128)
    angles32 = ALL_POSITIONS[:, None] * inv_freq.float()[None, :]
    assert max_error(ALL_POSITIONS, inv_freq, angles32.cos(), angles32.sin()) > 100 * TOL


def test_negative_and_fractional_float64_positions():
    """Centred grids give negative ids; fractional float64 positions keep their float64 value (the float32
    remainder is carried to the kernel) instead of being rounded to float32 first."""
    g = torch.Generator().manual_seed(0)
    positions = (torch.rand(4096, generator=g, dtype=F64) - 0.5) * 131070  # |pos| <= 65535, fractional
    inv_freq = plain_rope_inv_freq(128)
    cos, sin = kernel_cos_sin(positions, inv_freq)
    assert max_error(positions, inv_freq, cos, sin) < FRACTIONAL_TOL
    rounded = positions.float()  # what dropping the remainder would give: off by far more than TOL
    assert max_error(positions, inv_freq, *kernel_cos_sin(rounded, inv_freq)) > 100 * TOL


def test_quadrants_and_exact_angles():
    """Hand-derived cases: quarter turns land on the axes, whatever quadrant the reduction picks."""
    inv_freq = torch.tensor([math.pi / 2, math.pi, math.pi / 4], dtype=F64)
    positions = torch.arange(-8, 9, dtype=torch.float32)
    cos, sin = kernel_cos_sin(positions, inv_freq)
    want_cos = torch.cos(positions.to(F64)[:, None] * inv_freq).round(decimals=12)
    want_sin = torch.sin(positions.to(F64)[:, None] * inv_freq).round(decimals=12)
    assert (cos.to(F64) - want_cos).abs().max() < 2e-7 and (sin.to(F64) - want_sin).abs().max() < 2e-7


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_the_kernel_rotates_by_these_angles_at_large_positions(layout):
    """End to end through rope_qk: q made of pairs (1, 0) comes out as (cos, sin) of its angles, for tokens at
    positions up to 65535 on every axis."""
    inv_freq = plain_rope_inv_freq(32)
    plan = type(dype_plan())(inv_freq, torch.ones_like(inv_freq), torch.tensor([0] * 4 + [1] * 6 + [2] * 6))
    positions = torch.stack([torch.arange(65535, 65535 - 48, -1.0), torch.linspace(0, 65535, 48).round(),
                             torch.arange(48.0) * 1365], -1)
    ones, zeros = torch.ones(16), torch.zeros(16)
    unit = torch.stack([ones, zeros], -1).flatten() if layout == "interleaved" else torch.cat([ones, zeros])
    q = unit.expand(1, 48, 2, 32).contiguous()
    q_out, _ = rope_qk(q, q.clone(), positions, plan, layout, backend="triton")
    angles = positions.to(F64)[:, plan.pair_axis] * inv_freq
    if layout == "interleaved":
        got_cos, got_sin = q_out[0, :, :, 0::2], q_out[0, :, :, 1::2]
    else:
        got_cos, got_sin = q_out[0, :, :, :16], q_out[0, :, :, 16:]
    assert (got_cos.to(F64) - angles.cos()[:, None]).abs().max() < TOL
    assert (got_sin.to(F64) - angles.sin()[:, None]).abs().max() < TOL
    # the torch reference agrees with the same float64 angles (its tables are float32)
    ref = apply_rope_plan(q.to(F64), positions, plan, layout)
    assert (q_out.to(F64) - ref).abs().max() < TOL
