"""Triton building blocks shared by the RoPE kernels: reading a block of heads as rotation pairs, writing
them back, and turning positions and a frequency plan into accurate per-pair cos / sin.

A head's D channels form D/2 pairs (a_j, b_j). The layout switch is a `tl.constexpr` so each layout compiles
to its own straight-line code: "half" reads two contiguous half-rows, "interleaved" reads the whole row with
one wide load and splits even / odd channels in registers instead of issuing two stride-2 loads.
"""

from __future__ import annotations

import triton
import triton.language as tl

# 2*pi as an exact float32 head plus a tail: Triton types Python float literals as float32, so a float64
# constant has to be assembled from two float32-exact parts to keep its float64 accuracy.
TWO_PI_HI = tl.constexpr(6.2831854820251465)
TWO_PI_LO = tl.constexpr(-1.7484556000744883e-07)
INV_TWO_PI = tl.constexpr(0.15915494309189535)


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@triton.jit
def load_pairs(X, heads, pairs, mask, stride_h, stride_d, D_HALF: tl.constexpr, BLOCK_P: tl.constexpr,
               INTERLEAVED: tl.constexpr):
    """Load rows `heads` [BH, 1] of X as float32 pair halves (a, b), each [BH, BLOCK_P]."""
    if INTERLEAVED:
        chan = tl.arange(0, 2 * BLOCK_P)[None, :]
        row = tl.load(X + heads * stride_h + chan * stride_d, mask=mask & (chan < 2 * D_HALF), other=0.0)
        a, b = tl.split(tl.reshape(row.to(tl.float32), [row.shape[0], BLOCK_P, 2]))
    else:
        m = mask & (pairs < D_HALF)
        a = tl.load(X + heads * stride_h + pairs * stride_d, mask=m, other=0.0).to(tl.float32)
        b = tl.load(X + heads * stride_h + (pairs + D_HALF) * stride_d, mask=m, other=0.0).to(tl.float32)
    return a, b


@triton.jit
def store_pairs(Y, a, b, heads, pairs, mask, stride_h, stride_d, D_HALF: tl.constexpr, BLOCK_P: tl.constexpr,
                INTERLEAVED: tl.constexpr):
    """Store pair halves (a, b) [BH, BLOCK_P] into rows `heads` of Y, cast to Y's dtype."""
    if INTERLEAVED:
        chan = tl.arange(0, 2 * BLOCK_P)[None, :]
        row = tl.reshape(tl.join(a, b), [a.shape[0], 2 * BLOCK_P])
        tl.store(Y + heads * stride_h + chan * stride_d, row.to(Y.dtype.element_ty),
                 mask=mask & (chan < 2 * D_HALF))
    else:
        m = mask & (pairs < D_HALF)
        tl.store(Y + heads * stride_h + pairs * stride_d, a.to(Y.dtype.element_ty), mask=m)
        tl.store(Y + heads * stride_h + (pairs + D_HALF) * stride_d, b.to(Y.dtype.element_ty), mask=m)


@triton.jit
def plan_cos_sin(POS, INV, MS, AXIS, pos_row, inv_row, ms_row, stride_pa, D_HALF: tl.constexpr, BLOCK_P: tl.constexpr):
    """cos and sin [BLOCK_P] (float32, times mscale) of one token under the plan.

    The angle pos * inv_freq reaches hundreds of radians at large resolutions; a float32 product would
    carry ~1e-5 rad of error there. The product and its reduction modulo 2*pi run in float64 (a few
    operations per pair and token, shared by every head), and only the reduced angle in [-pi, pi] goes
    to float32 for the cos / sin.
    """
    p = tl.arange(0, BLOCK_P)
    pm = p < D_HALF
    axis = tl.load(AXIS + p, mask=pm, other=0)
    pos = tl.load(POS + pos_row + axis * stride_pa, mask=pm, other=0)
    if pos.dtype != tl.float64:
        pos = pos.to(tl.float32)  # the reference reads positions through float32, like FluxPosEmbed's ids.float()
    angle = pos.to(tl.float64) * tl.load(INV + inv_row + p, mask=pm, other=0.0).to(tl.float64)
    turns = tl.floor(angle * INV_TWO_PI + 0.5)
    reduced = ((angle - turns * TWO_PI_HI) - turns * TWO_PI_LO).to(tl.float32)
    ms = tl.load(MS + ms_row + p, mask=pm, other=0.0).to(tl.float32)
    return tl.cos(reduced) * ms, tl.sin(reduced) * ms
