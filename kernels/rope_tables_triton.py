"""Fused q + k RoPE from the cos / sin tables that diffusers models already pass to their attention.

For models whose position encoding hands out tables instead of positions, this kernel still rotates q and k
in one launch with one read and one write of each. The tables are taken per channel exactly as
dype_rope.rope.apply_rope uses them (out = x * cos + rotate_pairs(x) * sin), so tables whose two channels of
a pair differ are honoured too. The head loop is unrolled and issues all loads of a step before any store, as
in rope_triton.py. Reference: dype_rope.rope.apply_rope.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from ._pairs import load_pairs, next_pow2, store_pairs
from .rope_triton import bldh_strides, block_heads, block_warps


@triton.jit
def rotate_tables(a, b, ca, cb, sa, sb, TRANSPOSE: tl.constexpr):
    if TRANSPOSE:  # the adjoint of the forward map: the backward pass, also for tables with unequal halves
        return a * ca + b * sb, b * cb - a * sa
    return a * ca - b * sa, b * cb + a * sb


@triton.jit
def rope_qk_tables_kernel(
    Q, K, QO, KO, COS, SIN,
    sqb, sql, sqh, sqd, skb, skl, skh, skd,
    sob, sol, soh, sod, spb, spl, sph, spd,
    s_cb, s_cl, s_cd, s_sb, s_sl, s_sd,
    HQ: tl.constexpr, HK: tl.constexpr, D_HALF: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr,
    INTERLEAVED: tl.constexpr, TRANSPOSE: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    bat = tl.program_id(1).to(tl.int64)
    q, k = Q + bat * sqb + tok * sql, K + bat * skb + tok * skl
    qo, ko = QO + bat * sob + tok * sol, KO + bat * spb + tok * spl
    pairs = tl.arange(0, BLOCK_P)[None, :]
    row0 = tl.zeros([1, 1], tl.int32)  # the one row of a table / weight
    one = row0 == 0
    ca, cb = load_pairs(COS + bat * s_cb + tok * s_cl, row0, pairs, one, 0, s_cd, D_HALF, BLOCK_P, INTERLEAVED)
    sa, sb = load_pairs(SIN + bat * s_sb + tok * s_sl, row0, pairs, one, 0, s_sd, D_HALF, BLOCK_P, INTERLEAVED)
    for h0 in tl.static_range(0, HQ if HQ > HK else HK, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)[:, None]
        qa, qb = load_pairs(q, heads, pairs, heads < HQ, sqh, sqd, D_HALF, BLOCK_P, INTERLEAVED)
        ka, kb = load_pairs(k, heads, pairs, heads < HK, skh, skd, D_HALF, BLOCK_P, INTERLEAVED)
        qa, qb = rotate_tables(qa, qb, ca, cb, sa, sb, TRANSPOSE)
        ka, kb = rotate_tables(ka, kb, ca, cb, sa, sb, TRANSPOSE)
        store_pairs(qo, qa, qb, heads, pairs, heads < HQ, soh, sod, D_HALF, BLOCK_P, INTERLEAVED)
        store_pairs(ko, ka, kb, heads, pairs, heads < HK, sph, spd, D_HALF, BLOCK_P, INTERLEAVED)


def launch_rope_qk_tables(
    q: Tensor, k: Tensor, q_out: Tensor, k_out: Tensor, cos: Tensor, sin: Tensor, interleaved: bool,
    sequence_dim: int, transpose: bool, num_warps: int | None = None,
) -> None:
    """Rotate q into q_out and k into k_out by per-channel tables (outputs may alias inputs: in place).

    q, q_out: [B, L, Hq, D] (sequence_dim=1) or [B, Hq, L, D] (sequence_dim=2), any strides.
    k, k_out: the same with Hk heads.
    cos, sin: [L, D] or [B, L, D], any float dtype (read as float32), any strides.
    """
    batch, seq, d = q.shape[0], q.shape[sequence_dim], q.shape[-1]
    d_half = d // 2
    block_p = next_pow2(d_half)
    hq, hk = q.shape[3 - sequence_dim], k.shape[3 - sequence_dim]
    block_h = block_heads(block_p, max(hq, hk))

    def table_strides(t: Tensor) -> tuple[int, int, int]:
        return (t.stride(0) if t.dim() == 3 else 0, t.stride(-2), t.stride(-1))

    wrap_triton(rope_qk_tables_kernel)[(seq, batch)](
        q, k, q_out, k_out, cos, sin,
        *bldh_strides(q, sequence_dim), *bldh_strides(k, sequence_dim),
        *bldh_strides(q_out, sequence_dim), *bldh_strides(k_out, sequence_dim),
        *table_strides(cos), *table_strides(sin),
        HQ=hq, HK=hk, D_HALF=d_half, BLOCK_P=block_p, BLOCK_H=block_h,
        INTERLEAVED=interleaved, TRANSPOSE=transpose,
        num_warps=num_warps or block_warps(block_h, block_p, interleaved),
    )
