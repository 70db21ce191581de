"""Fused per-head RMSNorm of q and k followed by RoPE from positions and a plan: one read, one write.

FLUX, Flux2, Qwen-Image, SD3.5 and Wan normalise q and k per head (RMSNorm over D, with a learned weight)
right before RoPE. Done apart, the normalised q and k make a round trip through memory between the two.
Here a program normalises a head block in registers and rotates it before the only store. Reference:
torch.nn.functional.rms_norm followed by dype_rope.rope.apply_rope_plan.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from ._pairs import load_pairs, next_pow2, plan_cos_sin, store_pairs
from .rope_triton import bldh_strides, block_heads, block_warps


@triton.jit
def norm_rotate_heads(X, Y, W, H, sxh, sxd, syh, syd, s_wd, eps, cos, sin, D_HALF: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr, INTERLEAVED: tl.constexpr,
                      HAS_WEIGHT: tl.constexpr):
    pairs = tl.arange(0, BLOCK_P)[None, :]
    one = tl.full([1, 1], 0, tl.int32) == 0
    if HAS_WEIGHT:
        wa, wb = load_pairs(W, 0, pairs, one, 0, s_wd, D_HALF, BLOCK_P, INTERLEAVED)
    c = cos[None, :]
    s = sin[None, :]
    for h0 in range(0, H, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)[:, None]
        mask = heads < H
        a, b = load_pairs(X, heads, pairs, mask, sxh, sxd, D_HALF, BLOCK_P, INTERLEAVED)
        # padding lanes load as 0, so they add nothing to the sum of squares
        rstd = tl.rsqrt(tl.sum(a * a + b * b, axis=1) / (2 * D_HALF) + eps)[:, None]
        a = a * rstd
        b = b * rstd
        if HAS_WEIGHT:
            a = a * wa
            b = b * wb
        store_pairs(Y, a * c - b * s, b * c + a * s, heads, pairs, mask, syh, syd, D_HALF, BLOCK_P, INTERLEAVED)


@triton.jit
def norm_rope_qk_kernel(
    Q, K, QO, KO, WQ, WK, POS, INV, MS, AXIS,
    HQ, HK, eps_q, eps_k,
    sqb, sql, sqh, sqd, skb, skl, skh, skd,
    sob, sol, soh, sod, spb, spl, sph, spd,
    s_wq, s_wk, s_posb, s_posl, s_posa, s_invb, s_msb,
    D_HALF: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr,
    INTERLEAVED: tl.constexpr, HAS_WEIGHT: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    bat = tl.program_id(1).to(tl.int64)
    cos, sin = plan_cos_sin(POS, INV, MS, AXIS, bat * s_posb + tok * s_posl, bat * s_invb, bat * s_msb, s_posa,
                            D_HALF, BLOCK_P)
    norm_rotate_heads(Q + bat * sqb + tok * sql, QO + bat * sob + tok * sol, WQ, HQ, sqh, sqd, soh, sod, s_wq,
                      eps_q, cos, sin, D_HALF, BLOCK_P, BLOCK_H, INTERLEAVED, HAS_WEIGHT)
    norm_rotate_heads(K + bat * skb + tok * skl, KO + bat * spb + tok * spl, WK, HK, skh, skd, sph, spd, s_wk,
                      eps_k, cos, sin, D_HALF, BLOCK_P, BLOCK_H, INTERLEAVED, HAS_WEIGHT)


def launch_norm_rope_qk(
    q: Tensor, k: Tensor, q_out: Tensor, k_out: Tensor, q_weight: Tensor | None, k_weight: Tensor | None,
    eps_q: float, eps_k: float, positions: Tensor, inv_freq: Tensor, mscale: Tensor, pair_axis: Tensor,
    interleaved: bool, sequence_dim: int,
) -> None:
    """q_out = rope(rms_norm(q) * q_weight), k_out likewise (outputs may alias inputs).

    q, q_out: [B, L, Hq, D] (sequence_dim=1) or [B, Hq, L, D] (sequence_dim=2), any strides; k likewise.
    q_weight, k_weight: [D] or both None (no affine weight).
    positions, inv_freq, mscale, pair_axis: as for launch_rope_qk.
    """
    batch, seq, d = q.shape[0], q.shape[sequence_dim], q.shape[-1]
    d_half = d // 2
    block_p = next_pow2(d_half)
    hq, hk = q.shape[3 - sequence_dim], k.shape[3 - sequence_dim]
    block_h = block_heads(block_p, max(hq, hk))
    has_weight = q_weight is not None
    wq, wk = (q_weight, k_weight) if has_weight else (q, k)  # unread placeholders without a weight
    wrap_triton(norm_rope_qk_kernel)[(seq, batch)](
        q, k, q_out, k_out, wq, wk, positions, inv_freq, mscale, pair_axis,
        hq, hk, eps_q, eps_k,
        *bldh_strides(q, sequence_dim), *bldh_strides(k, sequence_dim),
        *bldh_strides(q_out, sequence_dim), *bldh_strides(k_out, sequence_dim),
        wq.stride(-1), wk.stride(-1),
        positions.stride(0) if positions.dim() == 3 else 0, positions.stride(-2), positions.stride(-1),
        inv_freq.stride(0) if inv_freq.dim() == 2 else 0, mscale.stride(0) if mscale.dim() == 2 else 0,
        D_HALF=d_half, BLOCK_P=block_p, BLOCK_H=block_h,
        INTERLEAVED=interleaved, HAS_WEIGHT=has_weight, num_warps=block_warps(block_h, block_p, interleaved),
    )
