"""Triton building blocks shared by the RoPE kernels: reading a block of heads as rotation pairs, writing
them back, and turning positions and a frequency plan into accurate per-pair cos / sin in float32 only.

A head's D channels form D/2 pairs (a_j, b_j). The layout switch is a `tl.constexpr` so each layout compiles
to its own straight-line code: "half" reads two contiguous half-rows, "interleaved" reads the whole row with
one wide load and splits even / odd channels in registers instead of issuing two stride-2 loads.

Angles (see docs/kernels.md, "Accuracy without float64"). The angle pos * inv_freq reaches 65535 rad at
position 65535, where a float32 product is off by ~4e-3 rad. Consumer GPUs run float64 at 1/64 of float32,
so no float64 instruction is used. Instead the angle is carried in turns, f = inv_freq / 2pi, split on the
host into f1 + f2 + f3 (f1 and f2 with 12 significant bits, f3 the float32 rest), and the position is split
in the kernel into p1 + p2 (12 bits each, by masking its bits). Every product p_i * f_j of two 12-bit
numbers is exact in float32, so its whole turns can be dropped exactly; only a few additions of numbers below
one turn round. The fractional turn r in [-1/2, 1/2] then goes through a quadrant split and short Taylor
polynomials, giving cos / sin within 3.7e-7 of float64 up to position 65535 (tested on all of them).

Why not the textbook fma two-product (hi = p * f, lo = fma(p, f, -hi)): the Triton interpreter evaluates
fma as an unfused multiply and add, so lo would be 0 there, and with floating-point contraction enabled (the
compiler's default) the GPU may fuse `hi - rint(hi)` into fma(p, f, -rint(hi)), counting lo twice. Products
of 12-bit halves are exact under both, so contraction cannot change them. rint is floor(x + 0.5) (exact for
|x| < 2^22), and cos / sin are polynomials rather than tl.cos / tl.sin, whose libdevice code carries a
float64 path for huge arguments that would put .f64 instructions into the kernel.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

# 2*pi as a float32 head plus a float32 tail.
TWO_PI_HI = tl.constexpr(6.2831854820251465)
TWO_PI_LO = tl.constexpr(-1.7484556000744883e-07)
# Taylor coefficients of sin and cos on [-pi/4, pi/4]: the first omitted terms are below 2e-9 there.
S3, S5, S7, S9 = (tl.constexpr(-1 / 6), tl.constexpr(1 / 120), tl.constexpr(-1 / 5040), tl.constexpr(1 / 362880))
C2, C4, C6, C8, C10 = (tl.constexpr(-1 / 2), tl.constexpr(1 / 24), tl.constexpr(-1 / 720), tl.constexpr(1 / 40320),
                       tl.constexpr(-1 / 3628800))
HIGH_12_BITS = tl.constexpr(-4096)  # 0xFFFFF000 as int32: sign, exponent and the top 11 stored mantissa bits


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# -- host side: the plan in the form the kernels read -----------------------------------------------------
def _top_12_bits(x: Tensor) -> Tensor:
    """float32 x truncated to its 12 leading significant bits (exact: a mask on the bit pattern)."""
    return (x.view(torch.int32) & -4096).view(torch.float32)


def kernel_plan(inv_freq: Tensor, mscale: Tensor) -> Tensor:
    """[..., 4, D/2] float32 rows (f1, f2, f3, mscale) with f1 + f2 + f3 = inv_freq / 2pi to ~2^-48 relative.

    inv_freq, mscale: [D/2] or [B, D/2], float64 or float32. f1 and f2 keep 12 significant bits each so that
    the kernels' products with 12-bit position halves are exact.
    """
    f = inv_freq.double() * (1.0 / (2.0 * math.pi))
    f1 = _top_12_bits(f.float())
    rest = f - f1.double()
    f2 = _top_12_bits(rest.float())
    f3 = (rest - f2.double()).float()
    return torch.stack([f1, f2, f3, mscale.float()], dim=-2).contiguous()


def kernel_positions(positions: Tensor) -> tuple[Tensor, Tensor | None]:
    """Positions as float32 (ids read through float32, like FluxPosEmbed's ids.float()), and for float64
    positions the float32 remainder pos - float32(pos) (None otherwise), so fractional float64 positions keep
    their precision without float64 arithmetic in the kernel."""
    if positions.dtype == torch.float64:
        hi = positions.float()
        return hi, (positions - hi.double()).float()
    return (positions if positions.dtype == torch.float32 else positions.float()), None


# -- device side -------------------------------------------------------------------------------------------
@triton.jit
def load_pairs(X, heads, pairs, mask, stride_h, stride_d, D_HALF: tl.constexpr, BLOCK_P: tl.constexpr,
               INTERLEAVED: tl.constexpr):
    """Load rows `heads` [BH, 1] of X as float32 pair halves (a, b), each [BH, BLOCK_P].

    Row and channel offsets are formed in int64: heads * stride_h overflows int32 on large [B, H, L, D] views.
    """
    row = heads.to(tl.int64) * stride_h
    if INTERLEAVED:
        chan = tl.arange(0, 2 * BLOCK_P)[None, :]
        x = tl.load(X + row + chan.to(tl.int64) * stride_d, mask=mask & (chan < 2 * D_HALF), other=0.0)
        a, b = tl.split(tl.reshape(x.to(tl.float32), [x.shape[0], BLOCK_P, 2]))
    else:
        m = mask & (pairs < D_HALF)
        a = tl.load(X + row + pairs.to(tl.int64) * stride_d, mask=m, other=0.0).to(tl.float32)
        b = tl.load(X + row + (pairs + D_HALF).to(tl.int64) * stride_d, mask=m, other=0.0).to(tl.float32)
    return a, b


@triton.jit
def store_pairs(Y, a, b, heads, pairs, mask, stride_h, stride_d, D_HALF: tl.constexpr, BLOCK_P: tl.constexpr,
                INTERLEAVED: tl.constexpr):
    """Store pair halves (a, b) [BH, BLOCK_P] into rows `heads` of Y, cast to Y's dtype."""
    row = heads.to(tl.int64) * stride_h
    if INTERLEAVED:
        chan = tl.arange(0, 2 * BLOCK_P)[None, :]
        y = tl.reshape(tl.join(a, b), [a.shape[0], 2 * BLOCK_P])
        tl.store(Y + row + chan.to(tl.int64) * stride_d, y.to(Y.dtype.element_ty), mask=mask & (chan < 2 * D_HALF))
    else:
        m = mask & (pairs < D_HALF)
        tl.store(Y + row + pairs.to(tl.int64) * stride_d, a.to(Y.dtype.element_ty), mask=m)
        tl.store(Y + row + (pairs + D_HALF).to(tl.int64) * stride_d, b.to(Y.dtype.element_ty), mask=m)


@triton.jit
def split_12(x):
    """x = hi + lo with hi the top 12 significant bits of x: both exact, lo has at most 12 bits too."""
    hi = (x.to(tl.int32, bitcast=True) & HIGH_12_BITS).to(tl.float32, bitcast=True)
    return hi, x - hi


@triton.jit
def drop_turns(t):
    """t minus its nearest whole number of turns, in [-1/2, 1/2]; exact for |t| < 2^22."""
    return t - tl.floor(t + 0.5)


@triton.jit
def fraction_of_turn(pos, pos_lo, f1, f2, f3):
    """pos * (f1 + f2 + f3) (+ pos_lo * f1) modulo 1, in about [-1/2, 1/2], float32 only."""
    p1, p2 = split_12(pos)
    r = drop_turns(p1 * f1)  # exact product, exact reduction
    r = drop_turns(r + drop_turns(p1 * f2))
    r = drop_turns(r + drop_turns(p2 * f1))
    return r + (p2 * f2 + (pos * f3 + pos_lo * f1))  # all three terms are small: plain float32 suffices


@triton.jit
def cos_sin_of_turn(r):
    """cos(2 pi r), sin(2 pi r) for r in [-1/2, 1/2] (or a little beyond), float32 only."""
    quarter = tl.floor(4.0 * r + 0.5)  # nearest quarter turn: the rest t is exact and in [-1/8, 1/8]
    t = r - 0.25 * quarter
    x = t * TWO_PI_HI + t * TWO_PI_LO
    x2 = x * x
    s = x + x * x2 * (S3 + x2 * (S5 + x2 * (S7 + x2 * S9)))
    c = 1.0 + x2 * (C2 + x2 * (C4 + x2 * (C6 + x2 * (C8 + x2 * C10))))
    q = quarter.to(tl.int32)
    odd = (q & 1) != 0  # a quarter turn swaps cos and sin
    cos = tl.where(odd, s, c)
    sin = tl.where(odd, c, s)
    cos = tl.where(((q + 1) & 2) != 0, -cos, cos)
    sin = tl.where((q & 2) != 0, -sin, sin)
    return cos, sin


@triton.jit
def plan_cos_sin(POS, POS_LO, PLAN, AXIS, pos_row, plan_row, stride_pa, D_HALF: tl.constexpr,
                 BLOCK_P: tl.constexpr, HAS_POS_LO: tl.constexpr):
    """cos and sin [BLOCK_P] (float32, times mscale) of one token under the plan (rows f1, f2, f3, mscale)."""
    p = tl.arange(0, BLOCK_P)
    pm = p < D_HALF
    axis = tl.load(AXIS + p, mask=pm, other=0)
    pos = tl.load(POS + pos_row + axis * stride_pa, mask=pm, other=0.0)
    if HAS_POS_LO:
        pos_lo = tl.load(POS_LO + pos_row + axis * stride_pa, mask=pm, other=0.0)
    else:
        pos_lo = tl.zeros_like(pos)
    f1 = tl.load(PLAN + plan_row + p, mask=pm, other=0.0)
    f2 = tl.load(PLAN + plan_row + D_HALF + p, mask=pm, other=0.0)
    f3 = tl.load(PLAN + plan_row + 2 * D_HALF + p, mask=pm, other=0.0)
    ms = tl.load(PLAN + plan_row + 3 * D_HALF + p, mask=pm, other=0.0)
    cos, sin = cos_sin_of_turn(fraction_of_turn(pos, pos_lo, f1, f2, f3))
    return cos * ms, sin * ms
