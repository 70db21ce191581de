"""Fused q + k RoPE from positions and a per-pair frequency plan, angles computed in the kernel.

One program handles one token of one batch row: it turns the token's positions into D/2 cos / sin once and
rotates every head of q and then every head of k with them, so q and k are each read once and written once
and no cos / sin table ever reaches memory. Reference: dype_rope.rope.apply_rope_plan.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from ._pairs import load_pairs, next_pow2, plan_cos_sin, store_pairs


@triton.jit
def rotate_heads(X, Y, H, sxh, sxd, syh, syd, cos, sin, D_HALF: tl.constexpr, BLOCK_P: tl.constexpr,
                 BLOCK_H: tl.constexpr, INTERLEAVED: tl.constexpr):
    """Rotate the H heads of one token of X into Y by per-pair cos / sin [BLOCK_P]."""
    pairs = tl.arange(0, BLOCK_P)[None, :]
    c = cos[None, :]
    s = sin[None, :]
    for h0 in range(0, H, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)[:, None]
        mask = heads < H
        a, b = load_pairs(X, heads, pairs, mask, sxh, sxd, D_HALF, BLOCK_P, INTERLEAVED)
        store_pairs(Y, a * c - b * s, b * c + a * s, heads, pairs, mask, syh, syd, D_HALF, BLOCK_P, INTERLEAVED)


@triton.jit
def rope_qk_kernel(
    Q, K, QO, KO, POS, INV, MS, AXIS,
    HQ, HK,
    sqb, sql, sqh, sqd, skb, skl, skh, skd,
    sob, sol, soh, sod, spb, spl, sph, spd,
    s_posb, s_posl, s_posa, s_invb, s_msb,
    D_HALF: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr,
    INTERLEAVED: tl.constexpr, CONJUGATE: tl.constexpr,
):
    # CONJUGATE turns by minus the angle: the backward pass (and the inverse rotation) with the same kernel.
    tok = tl.program_id(0).to(tl.int64)
    bat = tl.program_id(1).to(tl.int64)
    cos, sin = plan_cos_sin(POS, INV, MS, AXIS, bat * s_posb + tok * s_posl, bat * s_invb, bat * s_msb, s_posa,
                            D_HALF, BLOCK_P)
    if CONJUGATE:
        sin = -sin
    rotate_heads(Q + bat * sqb + tok * sql, QO + bat * sob + tok * sol, HQ, sqh, sqd, soh, sod, cos, sin,
                 D_HALF, BLOCK_P, BLOCK_H, INTERLEAVED)
    rotate_heads(K + bat * skb + tok * skl, KO + bat * spb + tok * spl, HK, skh, skd, sph, spd, cos, sin,
                 D_HALF, BLOCK_P, BLOCK_H, INTERLEAVED)


def bldh_strides(x: Tensor, sequence_dim: int) -> tuple[int, int, int, int]:
    """(batch, sequence, head, channel) strides of x [B, L, H, D] (sequence_dim=1) or [B, H, L, D] (2)."""
    sb, s1, s2, sd = x.stride()
    return (sb, s1, s2, sd) if sequence_dim == 1 else (sb, s2, s1, sd)


def block_heads(block_p: int, heads: int) -> int:
    """Heads per inner step: the largest power of two dividing `heads` (no masked-off rows; FLUX's 24 heads
    go as 3 x 8), within a [BLOCK_H, D] tile of at most 4096 elements; a head count with no useful power-of-two
    divisor (3, 5, ...) is padded to the next power of two instead."""
    cap = max(1, 4096 // (2 * block_p))
    divisor = min(heads & -heads, cap)
    return divisor if divisor > 2 else min(next_pow2(heads), cap)


def block_warps(block_h: int, block_p: int, interleaved: bool) -> int:
    """Warps for 8 elements per thread per load: 128-bit loads of 16-bit data ("half" loads half-rows)."""
    tile = block_h * block_p * (2 if interleaved else 1)
    return max(1, min(8, tile // 256))


def launch_rope_qk(
    q: Tensor, k: Tensor, q_out: Tensor, k_out: Tensor, positions: Tensor, inv_freq: Tensor, mscale: Tensor,
    pair_axis: Tensor, interleaved: bool, sequence_dim: int, conjugate: bool, block_h: int | None = None,
    num_warps: int | None = None,
) -> None:
    """Rotate q into q_out and k into k_out (either may alias its input: in place).

    q, q_out:  [B, L, Hq, D] (sequence_dim=1) or [B, Hq, L, D] (sequence_dim=2), any strides.
    k, k_out:  the same with Hk heads (Hk may differ from Hq).
    positions: [L, n_axes] or [B, L, n_axes], any real or integer dtype.
    inv_freq, mscale: [D/2] or [B, D/2], float64 or float32, last dim contiguous.
    pair_axis: [D/2] integer, contiguous: which position axis pair j reads.
    block_h, num_warps: launch shape (default: block_heads(), block_warps()); the GPU benchmark sweeps them.
    """
    batch, seq, d = q.shape[0], q.shape[sequence_dim], q.shape[-1]
    d_half = d // 2
    s_posb = positions.stride(0) if positions.dim() == 3 else 0
    s_posl, s_posa = positions.stride(-2), positions.stride(-1)
    s_invb = inv_freq.stride(0) if inv_freq.dim() == 2 else 0
    s_msb = mscale.stride(0) if mscale.dim() == 2 else 0
    hq, hk = q.shape[3 - sequence_dim], k.shape[3 - sequence_dim]
    block_p = next_pow2(d_half)
    block_h = block_h or block_heads(block_p, max(hq, hk))
    wrap_triton(rope_qk_kernel)[(seq, batch)](
        q, k, q_out, k_out, positions, inv_freq, mscale, pair_axis,
        hq, hk,
        *bldh_strides(q, sequence_dim), *bldh_strides(k, sequence_dim),
        *bldh_strides(q_out, sequence_dim), *bldh_strides(k_out, sequence_dim),
        s_posb, s_posl, s_posa, s_invb, s_msb,
        D_HALF=d_half, BLOCK_P=block_p, BLOCK_H=block_h, INTERLEAVED=interleaved, CONJUGATE=conjugate,
        num_warps=num_warps or block_warps(block_h, block_p, interleaved),
    )
