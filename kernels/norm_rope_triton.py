"""Fused per-head RMSNorm of q and k followed by RoPE from positions and a plan: one read, one write.

FLUX, Flux2, Qwen-Image, SD3.5 and Wan normalise q and k per head (RMSNorm over D, with a learned weight)
right before RoPE. Done apart, the normalised q and k make a round trip through memory between the two.
Here a program normalises a head block in registers and rotates it before the only store. The loop over head
blocks is unrolled and issues every load of a step before the angle math and the stores, as in
rope_triton.py. Reference: torch.nn.functional.rms_norm followed by dype_rope.rope.apply_rope_plan.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from ._pairs import kernel_plan, kernel_positions, load_pairs, next_pow2, plan_cos_sin, store_pairs
from .rope_triton import bldh_strides, block_heads, block_warps, plan_strides


@triton.jit
def rms_normalise(a, b, eps, D_HALF: tl.constexpr):
    """Pair halves [BH, BLOCK_P] of rows divided by their root mean square (padding lanes hold 0 and add
    nothing to the sum of squares)."""
    rstd = tl.rsqrt(tl.sum(a * a + b * b, axis=1) / (2 * D_HALF) + eps)[:, None]
    return a * rstd, b * rstd


@triton.jit
def norm_rope_qk_kernel(
    Q, K, QO, KO, WQ, WK, POS, POS_LO, PLAN, AXIS,
    eps_q, eps_k,
    sqb, sql, sqh, sqd, skb, skl, skh, skd,
    sob, sol, soh, sod, spb, spl, sph, spd,
    s_wq, s_wk, s_posb, s_posl, s_posa, s_planb,
    HQ: tl.constexpr, HK: tl.constexpr, D_HALF: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr,
    INTERLEAVED: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_POS_LO: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    bat = tl.program_id(1).to(tl.int64)
    q, k = Q + bat * sqb + tok * sql, K + bat * skb + tok * skl
    qo, ko = QO + bat * sob + tok * sol, KO + bat * spb + tok * spl
    pairs = tl.arange(0, BLOCK_P)[None, :]
    for h0 in tl.static_range(0, HQ if HQ > HK else HK, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)[:, None]
        qa, qb = load_pairs(q, heads, pairs, heads < HQ, sqh, sqd, D_HALF, BLOCK_P, INTERLEAVED)
        ka, kb = load_pairs(k, heads, pairs, heads < HK, skh, skd, D_HALF, BLOCK_P, INTERLEAVED)
        if h0 == 0:  # after the first loads are on their way; every later step reuses these
            row0 = tl.zeros([1, 1], tl.int32)  # the weight's one row
            one = row0 == 0
            if HAS_WEIGHT:
                wqa, wqb = load_pairs(WQ, row0, pairs, one, 0, s_wq, D_HALF, BLOCK_P, INTERLEAVED)
                wka, wkb = load_pairs(WK, row0, pairs, one, 0, s_wk, D_HALF, BLOCK_P, INTERLEAVED)
            cos, sin = plan_cos_sin(POS, POS_LO, PLAN, AXIS, bat * s_posb + tok * s_posl, bat * s_planb, s_posa,
                                    D_HALF, BLOCK_P, HAS_POS_LO)
            c = cos[None, :]
            s = sin[None, :]
        qa, qb = rms_normalise(qa, qb, eps_q, D_HALF)
        ka, kb = rms_normalise(ka, kb, eps_k, D_HALF)
        if HAS_WEIGHT:
            qa, qb, ka, kb = qa * wqa, qb * wqb, ka * wka, kb * wkb
        store_pairs(qo, qa * c - qb * s, qb * c + qa * s, heads, pairs, heads < HQ, soh, sod, D_HALF, BLOCK_P,
                    INTERLEAVED)
        store_pairs(ko, ka * c - kb * s, kb * c + ka * s, heads, pairs, heads < HK, sph, spd, D_HALF, BLOCK_P,
                    INTERLEAVED)


def launch_norm_rope_qk(
    q: Tensor, k: Tensor, q_out: Tensor, k_out: Tensor, q_weight: Tensor | None, k_weight: Tensor | None,
    eps_q: float, eps_k: float, positions: Tensor, inv_freq: Tensor, mscale: Tensor, pair_axis: Tensor,
    interleaved: bool, sequence_dim: int, num_warps: int | None = None,
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
    pos, pos_lo = kernel_positions(positions)
    plan = kernel_plan(inv_freq, mscale)
    has_weight = q_weight is not None
    wq, wk = (q_weight, k_weight) if has_weight else (q, k)  # unread placeholders without a weight
    wrap_triton(norm_rope_qk_kernel)[(seq, batch)](
        q, k, q_out, k_out, wq, wk, pos, pos if pos_lo is None else pos_lo, plan, pair_axis,
        eps_q, eps_k,
        *bldh_strides(q, sequence_dim), *bldh_strides(k, sequence_dim),
        *bldh_strides(q_out, sequence_dim), *bldh_strides(k_out, sequence_dim),
        wq.stride(-1), wk.stride(-1),
        pos.stride(0) if pos.dim() == 3 else 0, pos.stride(-2), pos.stride(-1), plan_strides(plan),
        HQ=hq, HK=hk, D_HALF=d_half, BLOCK_P=block_p, BLOCK_H=block_h,
        INTERLEAVED=interleaved, HAS_WEIGHT=has_weight, HAS_POS_LO=pos_lo is not None,
        num_warps=num_warps or block_warps(block_h, block_p, interleaved),
    )
