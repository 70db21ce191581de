"""Wan with the fused kernels (`patch(..., backend="triton")`): q and k rotated in one launch per attention.

WanAttnProcessor rotates interleaved pairs (x[2j], x[2j+1]) by (cos, sin) tables [1, L, 1, D]. Its QK-RMSNorm
runs over all heads together (`norm_q` spans heads * head_dim), which is not the per-head norm the fused norm
kernel computes, so the norm stays diffusers' and only the rotation goes through the kernel. Swapped, and undone
exactly by the patch handle:

* `model.rope` for :class:`FusedWanRotaryPosEmbed`, which returns `(positions, marker)` of shapes [1, L, 1, 3]
  and [1, L, 1, 0] instead of the two tables [1, L, 1, D]. The same rank and sequence dimension as the tables
  let the context-parallel split that diffusers applies to this output (`_cp_plan["rope"]`) shard positions as
  it shards tables; the zero-width marker, a shape no table has, tells the processor which one it received;
* every WanAttnProcessor for :class:`FusedWanAttnProcessor` (the cross-attentions receive no rotary embedding
  and run as before).

The plan is the call's one plan, read from the adapter (the rope module builds it in the same forward) in its
full precision. Called with (cos, sin) tables, the processor rotates through the table kernel instead. Other
processors are refused at patch time: they could not read positions.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from dype_rope.kernels import rope_qk, rope_qk_tables

from .fused_qk import FusedProcessor, plan_of_step, stock_attentions, swap_processors
from .parallel import swap_module
from .video import latent_grid
from .wan_embed import DyPEWanRotaryPosEmbed

from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import (
    WanAttention,
    WanAttnProcessor,
    _get_added_kv_projections,
    _get_qkv_projections,
)


def grid_positions(grid: Sequence[int], device: torch.device) -> Tensor:
    """(frame, row, column) of every token of a frames-major grid, [F * H * W, 3] float32, built on `device`."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))


class FusedWanRotaryPosEmbed(DyPEWanRotaryPosEmbed):
    """The DyPE rope module, handing out token positions [1, L, 1, 3] and a zero-width marker [1, L, 1, 0]."""

    def forward(self, hidden_states: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        grid = latent_grid(hidden_states, self.patch_size)
        self._plan_of_call(grid, hidden_states.device)  # builds the call's plan, which the processors read
        positions = grid_positions(grid, hidden_states.device)[None, :, None]
        return positions, positions[..., :0]


def _rotate(q: Tensor, k: Tensor, rotary_emb: tuple[Tensor, Tensor], plan_of_call, backend: str):
    first, second = rotary_emb
    if second.shape[-1] == 0:  # positions and marker (a shape test: fixed when compiled)
        return rope_qk(q, k, first[0, :, 0], plan_of_call(), "interleaved", 1, backend=backend)
    # Wan reads a pair's cos from its even channel and its sin from its odd one; spread each to both channels
    cos = first[..., 0::2].repeat_interleave(2, dim=-1)[:, :, 0]
    sin = second[..., 1::2].repeat_interleave(2, dim=-1)[:, :, 0]
    if cos.shape[0] == 1:
        cos, sin = cos[0], sin[0]  # one table for the whole batch
    return rope_qk_tables(q, k, cos.float(), sin.float(), "interleaved", 1, backend=backend)


class FusedWanAttnProcessor(FusedProcessor, WanAttnProcessor):
    """WanAttnProcessor with RoPE through the fused kernels."""

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        rotary_emb: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        context_img = None
        if attn.add_k_proj is not None:
            # image-to-video: the image context precedes Wan's fixed 512 text tokens
            n_img = encoder_hidden_states.shape[1] - 512
            context_img, encoder_hidden_states = encoder_hidden_states[:, :n_img], encoder_hidden_states[:, n_img:]

        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        heads = lambda x: x.unflatten(2, (attn.heads, -1))  # noqa: E731
        query, key, value = heads(attn.norm_q(query)), heads(attn.norm_k(key)), heads(value)
        if rotary_emb is not None:
            query, key = _rotate(query, key, rotary_emb, self.plan_of_call, self.backend)

        out_img = None
        if context_img is not None:
            key_img, value_img = _get_added_kv_projections(attn, context_img)
            key_img, value_img = heads(attn.norm_added_k(key_img)), heads(value_img)
            out_img = dispatch_attention_fn(
                query, key_img, value_img, attn_mask=None, dropout_p=0.0, is_causal=False,
                backend=self._attention_backend, parallel_config=None,
            )
            out_img = out_img.flatten(2, 3).type_as(query)

        hidden_states = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend,
            # as diffusers: the sequence is sharded for self-attention only
            parallel_config=self._parallel_config if encoder_hidden_states is None else None,
        )
        hidden_states = hidden_states.flatten(2, 3).type_as(query)
        if out_img is not None:
            hidden_states = hidden_states + out_img
        return attn.to_out[1](attn.to_out[0](hidden_states))


def install_fused_attention(adapter) -> None:
    """Swap the Wan model's rope module and attention processors for the fused ones (reversibly)."""
    model = adapter.model
    fused_for = {WanAttnProcessor: FusedWanAttnProcessor}
    attentions = stock_attentions(model, (WanAttention,), fused_for)
    swap_module(adapter, "rope", FusedWanRotaryPosEmbed(model.rope, model.rope._plan_of_call))
    swap_processors(adapter, attentions, fused_for, plan_of_step(adapter), "triton")
