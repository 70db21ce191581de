"""Fused q + k RoPE from the cos / sin tables that diffusers models already pass to their attention.

For models whose position encoding hands out tables instead of positions, this kernel still rotates q and k
in one launch with one read and one write of each. The tables are taken per channel exactly as
dype_rope.rope.apply_rope uses them (out = x * cos + rotate_pairs(x) * sin), so tables whose two channels of
a pair differ are honoured too. Reference: dype_rope.rope.apply_rope.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from ._pairs import load_pairs, next_pow2, store_pairs
from .rope_triton import bldh_strides, block_heads, block_warps


@triton.jit
def rotate_heads_tables(X, Y, H, sxh, sxd, syh, syd, ca, cb, sa, sb, D_HALF: tl.constexpr,
                        BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr, INTERLEAVED: tl.constexpr,
                        TRANSPOSE: tl.constexpr):
    pairs = tl.arange(0, BLOCK_P)[None, :]
    for h0 in range(0, H, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)[:, None]
        mask = heads < H
        a, b = load_pairs(X, heads, pairs, mask, sxh, sxd, D_HALF, BLOCK_P, INTERLEAVED)
        if TRANSPOSE:  # the adjoint of the forward map: the backward pass, also for tables with unequal halves
            ya = a * ca + b * sb
            yb = b * cb - a * sa
        else:
            ya = a * ca - b * sa
            yb = b * cb + a * sb
        store_pairs(Y, ya, yb, heads, pairs, mask, syh, syd, D_HALF, BLOCK_P, INTERLEAVED)


@triton.jit
def rope_qk_tables_kernel(
    Q, K, QO, KO, COS, SIN,
    HQ, HK,
    sqb, sql, sqh, sqd, skb, skl, skh, skd,
    sob, sol, soh, sod, spb, spl, sph, spd,
    s_cb, s_cl, s_cd, s_sb, s_sl, s_sd,
    D_HALF: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr,
    INTERLEAVED: tl.constexpr, TRANSPOSE: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    bat = tl.program_id(1).to(tl.int64)
    one = tl.full([1, 1], 0, tl.int32) == 0
    ca, cb = load_pairs(COS + bat * s_cb + tok * s_cl, 0, tl.arange(0, BLOCK_P)[None, :], one, 0, s_cd,
                        D_HALF, BLOCK_P, INTERLEAVED)
    sa, sb = load_pairs(SIN + bat * s_sb + tok * s_sl, 0, tl.arange(0, BLOCK_P)[None, :], one, 0, s_sd,
                        D_HALF, BLOCK_P, INTERLEAVED)
    rotate_heads_tables(Q + bat * sqb + tok * sql, QO + bat * sob + tok * sol, HQ, sqh, sqd, soh, sod,
                        ca, cb, sa, sb, D_HALF, BLOCK_P, BLOCK_H, INTERLEAVED, TRANSPOSE)
    rotate_heads_tables(K + bat * skb + tok * skl, KO + bat * spb + tok * spl, HK, skh, skd, sph, spd,
                        ca, cb, sa, sb, D_HALF, BLOCK_P, BLOCK_H, INTERLEAVED, TRANSPOSE)


def launch_rope_qk_tables(
    q: Tensor, k: Tensor, q_out: Tensor, k_out: Tensor, cos: Tensor, sin: Tensor, interleaved: bool,
    sequence_dim: int, transpose: bool,
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
        hq, hk,
        *bldh_strides(q, sequence_dim), *bldh_strides(k, sequence_dim),
        *bldh_strides(q_out, sequence_dim), *bldh_strides(k_out, sequence_dim),
        *table_strides(cos), *table_strides(sin),
        D_HALF=d_half, BLOCK_P=block_p, BLOCK_H=block_h,
        INTERLEAVED=interleaved, TRANSPOSE=transpose, num_warps=block_warps(block_h, block_p, interleaved),
    )
