"""Fused q + k RoPE from positions and a per-pair frequency plan, angles computed in the kernel.

One program handles one token of one batch row: it turns the token's positions into D/2 cos / sin once and
rotates every head of q and of k with them, so q and k are each read once and written once and no cos / sin
table ever reaches memory. Reference: dype_rope.rope.apply_rope_plan.

Bytes in flight: a memory-bound kernel is as fast as the loads it keeps outstanding. The head counts are
`tl.constexpr`, so the head loop is unrolled at compile time; in each step all loads of q and k are issued
before the angle math and before any store (a store may alias a later load when rotating in place, so the
compiler could not hoist those loads itself). With up to MAX_TILE elements per tensor that is one step
holding every head of the token: FLUX's 24 heads of 128 channels read as one [32, 128] tile of q and one
of k, the 8 padding rows masked off (they cost registers, not memory traffic).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from ._pairs import kernel_plan, kernel_positions, load_pairs, next_pow2, plan_cos_sin, store_pairs

MAX_TILE = 8192  # elements of one [heads, channels] tile of q (or k) held in registers at once


@triton.jit
def rope_qk_kernel(
    Q, K, QO, KO, POS, POS_LO, PLAN, AXIS,
    sqb, sql, sqh, sqd, skb, skl, skh, skd,
    sob, sol, soh, sod, spb, spl, sph, spd,
    s_posb, s_posl, s_posa, s_planb,
    HQ: tl.constexpr, HK: tl.constexpr, D_HALF: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr,
    INTERLEAVED: tl.constexpr, CONJUGATE: tl.constexpr, HAS_POS_LO: tl.constexpr,
):
    # CONJUGATE turns by minus the angle: the backward pass (and the inverse rotation) with the same kernel.
    tok = tl.program_id(0).to(tl.int64)
    bat = tl.program_id(1).to(tl.int64)
    q, k = Q + bat * sqb + tok * sql, K + bat * skb + tok * skl
    qo, ko = QO + bat * sob + tok * sol, KO + bat * spb + tok * spl
    pairs = tl.arange(0, BLOCK_P)[None, :]
    for h0 in tl.static_range(0, HQ if HQ > HK else HK, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)[:, None]
        qa, qb = load_pairs(q, heads, pairs, heads < HQ, sqh, sqd, D_HALF, BLOCK_P, INTERLEAVED)
        ka, kb = load_pairs(k, heads, pairs, heads < HK, skh, skd, D_HALF, BLOCK_P, INTERLEAVED)
        if h0 == 0:  # after the first loads are on their way; every later step reuses the angles
            cos, sin = plan_cos_sin(POS, POS_LO, PLAN, AXIS, bat * s_posb + tok * s_posl, bat * s_planb, s_posa,
                                    D_HALF, BLOCK_P, HAS_POS_LO)
            if CONJUGATE:
                sin = -sin
            c = cos[None, :]
            s = sin[None, :]
        store_pairs(qo, qa * c - qb * s, qb * c + qa * s, heads, pairs, heads < HQ, soh, sod, D_HALF, BLOCK_P,
                    INTERLEAVED)
        store_pairs(ko, ka * c - kb * s, kb * c + ka * s, heads, pairs, heads < HK, sph, spd, D_HALF, BLOCK_P,
                    INTERLEAVED)


def bldh_strides(x: Tensor, sequence_dim: int) -> tuple[int, int, int, int]:
    """(batch, sequence, head, channel) strides of x [B, L, H, D] (sequence_dim=1) or [B, H, L, D] (2)."""
    sb, s1, s2, sd = x.stride()
    return (sb, s1, s2, sd) if sequence_dim == 1 else (sb, s2, s1, sd)


def block_heads(block_p: int, heads: int) -> int:
    """Heads per unrolled step: all of them (rounded up to a power of two) while a [BLOCK_H, D] tile holds at
    most MAX_TILE elements, else the largest power of two that does."""
    return max(1, min(next_pow2(heads), MAX_TILE // (2 * block_p)))


def block_warps(block_h: int, block_p: int, interleaved: bool) -> int:
    """Warps for 16 elements per thread and tensor: two 128-bit loads of 16-bit data in flight per thread for
    q and two for k (8 warps for FLUX's [32, 128] tiles, 16 for the [64, 128] tiles of 40 or 48 heads). A
    heuristic until the launch sweep of benchmarks/gpu_bench.py has run on a GPU."""
    return max(1, min(16, block_h * 2 * block_p // 512))


def plan_strides(t: Tensor) -> int:
    return t.stride(0) if t.dim() == 3 else 0


def launch_rope_qk(
    q: Tensor, k: Tensor, q_out: Tensor, k_out: Tensor, positions: Tensor, inv_freq: Tensor, mscale: Tensor,
    pair_axis: Tensor, interleaved: bool, sequence_dim: int, conjugate: bool, block_h: int | None = None,
    num_warps: int | None = None,
) -> None:
    """Rotate q into q_out and k into k_out (either may alias its input: in place).

    q, q_out:  [B, L, Hq, D] (sequence_dim=1) or [B, Hq, L, D] (sequence_dim=2), any strides.
    k, k_out:  the same with Hk heads (Hk may differ from Hq).
    positions: [L, n_axes] or [B, L, n_axes], any real or integer dtype.
    inv_freq, mscale: [D/2] or [B, D/2], float64 or float32 (split into float32 parts here: kernel_plan).
    pair_axis: [D/2] integer, contiguous: which position axis pair j reads.
    block_h, num_warps: launch shape (default: block_heads(), block_warps()); the GPU benchmark sweeps them.
    """
    batch, seq, d = q.shape[0], q.shape[sequence_dim], q.shape[-1]
    d_half = d // 2
    pos, pos_lo = kernel_positions(positions)
    plan = kernel_plan(inv_freq, mscale)
    hq, hk = q.shape[3 - sequence_dim], k.shape[3 - sequence_dim]
    block_p = next_pow2(d_half)
    block_h = block_h or block_heads(block_p, max(hq, hk))
    wrap_triton(rope_qk_kernel)[(seq, batch)](
        q, k, q_out, k_out, pos, pos if pos_lo is None else pos_lo, plan, pair_axis,
        *bldh_strides(q, sequence_dim), *bldh_strides(k, sequence_dim),
        *bldh_strides(q_out, sequence_dim), *bldh_strides(k_out, sequence_dim),
        pos.stride(0) if pos.dim() == 3 else 0, pos.stride(-2), pos.stride(-1), plan_strides(plan),
        HQ=hq, HK=hk, D_HALF=d_half, BLOCK_P=block_p, BLOCK_H=block_h,
        INTERLEAVED=interleaved, CONJUGATE=conjugate, HAS_POS_LO=pos_lo is not None,
        num_warps=num_warps or block_warps(block_h, block_p, interleaved),
    )
