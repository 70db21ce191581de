"""FLUX.2 with the fused kernels (`patch(..., backend="triton")`): QK-RMSNorm and RoPE in one launch per segment.

FLUX.2's forward embeds text and image ids in two calls of `pos_embed` and concatenates the two results element by
element (`torch.cat([text[0], image[0]])`, the same for `[1]`), so whatever the embedding returns must be a pair of
tensors. The fused embedding therefore hands out `(ids, ids[..., :0])`: the concatenation gives the joint
sequence's positions and a zero-width marker, a shape no (cos, sin) table can have, so the processors tell the two
apart without looking at values. The plan itself does not travel with the call's tensors: the processors read the
call's one plan from the adapter, which the embedding built in the same forward.

Swapped, and undone exactly by the patch handle:

* `model.pos_embed` for :class:`FusedFlux2PosEmbed`;
* every Flux2AttnProcessor for :class:`FusedFlux2AttnProcessor` (double-stream blocks: text and image tokens have
  their own norm weights, so one launch per segment) and every Flux2ParallelSelfAttnProcessor for
  :class:`FusedFlux2ParallelSelfAttnProcessor` (single-stream blocks: one launch).

Other processors (the KV-cache ones, user processors) are refused at patch time: they could not read positions.
Called with plain (cos, sin) tables, the fused processors rotate through the table kernel instead.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from dype_rope.kernels import rope_qk_tables
from dype_rope.rope import RopePlan

from .flux_embed import DyPEFluxPosEmbed
from .fused_qk import FusedProcessor, norm_rope, stock_attentions, swap_processors

from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_flux2 import (
    Flux2Attention,
    Flux2AttnProcessor,
    Flux2ParallelSelfAttention,
    Flux2ParallelSelfAttnProcessor,
    _get_qkv_projections,
)


def carries_positions(rotary_emb: tuple[Tensor, Tensor]) -> bool:
    """True for the fused embedding's (positions, zero-width marker), False for (cos, sin) tables: a shape test,
    so compiled graphs specialise on it instead of syncing."""
    return rotary_emb[1].shape[-1] == 0


class FusedFlux2PosEmbed(DyPEFluxPosEmbed):
    """The DyPE embedding, handing out (ids, zero-width marker) instead of cos / sin tables."""

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        self._plan_of_call()  # the call's plan is built on the first embedding of the call, as in the table path
        return ids, ids[..., :0]


def _rotate(attn, norms, q: Tensor, k: Tensor, rotary_emb, plan_of_call: Callable[[], RopePlan], backend: str):
    """norm and RoPE of one token segment; norms = (norm for q, norm for k)."""
    if rotary_emb is not None and carries_positions(rotary_emb):
        return norm_rope(norms[0], norms[1], q, k, rotary_emb[0], plan_of_call(), backend)
    q, k = norms[0](q), norms[1](k)
    if rotary_emb is None:
        return q, k
    cos, sin = rotary_emb
    return rope_qk_tables(q, k, cos, sin, "interleaved", 1, backend=backend)


def _segment(rotary_emb, start: int, stop: int):
    return None if rotary_emb is None else tuple(r[start:stop] for r in rotary_emb)


class FusedFlux2AttnProcessor(FusedProcessor, Flux2AttnProcessor):
    """Flux2AttnProcessor (double-stream blocks) with norm + RoPE through the fused kernels."""

    def __call__(
        self,
        attn: Flux2Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        image_rotary_emb: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        query, key, value, enc_query, enc_key, enc_value = _get_qkv_projections(attn, hidden_states,
                                                                                 encoder_hidden_states)
        query, key, value = (x.unflatten(-1, (-1, attn.head_dim)) for x in (query, key, value))
        if attn.added_kv_proj_dim is not None:
            enc = (enc_query, enc_key, enc_value)
            enc_query, enc_key, enc_value = (x.unflatten(-1, (-1, attn.head_dim)) for x in enc)
            n_text = enc_query.shape[1]
            # rows of the rotary embedding follow the joint sequence: text first, then image
            enc_query, enc_key = _rotate(attn, (attn.norm_added_q, attn.norm_added_k), enc_query, enc_key,
                                         _segment(image_rotary_emb, 0, n_text), self.plan_of_call, self.backend)
            query, key = _rotate(attn, (attn.norm_q, attn.norm_k), query, key,
                                 _segment(image_rotary_emb, n_text, None), self.plan_of_call, self.backend)
            query, key = torch.cat([enc_query, query], dim=1), torch.cat([enc_key, key], dim=1)
            value = torch.cat([enc_value, value], dim=1)
        else:
            query, key = _rotate(attn, (attn.norm_q, attn.norm_k), query, key, image_rotary_emb, self.plan_of_call,
                                 self.backend)

        hidden_states = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is not None:
            n_text = encoder_hidden_states.shape[1]
            encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
                [n_text, hidden_states.shape[1] - n_text], dim=1
            )
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        return hidden_states if encoder_hidden_states is None else (hidden_states, encoder_hidden_states)


class FusedFlux2ParallelSelfAttnProcessor(FusedProcessor, Flux2ParallelSelfAttnProcessor):
    """Flux2ParallelSelfAttnProcessor (single-stream blocks) with norm + RoPE through the fused kernels."""

    def __call__(
        self,
        attn: Flux2ParallelSelfAttention,
        hidden_states: Tensor,
        attention_mask: Tensor | None = None,
        image_rotary_emb: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        projected = attn.to_qkv_mlp_proj(hidden_states)
        # split by the global QKV : MLP ratio, so a column-sharded projection splits the same way
        qkv_dim = 3 * attn.inner_dim
        mlp_dim = attn.mlp_hidden_dim * attn.mlp_mult_factor
        local_qkv = projected.shape[-1] * qkv_dim // (qkv_dim + mlp_dim)
        qkv, mlp_hidden_states = torch.split(projected, [local_qkv, projected.shape[-1] - local_qkv], dim=-1)
        query, key, value = (x.unflatten(-1, (-1, attn.head_dim)) for x in qkv.chunk(3, dim=-1))
        query, key = _rotate(attn, (attn.norm_q, attn.norm_k), query, key, image_rotary_emb, self.plan_of_call,
                             self.backend)

        hidden_states = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        hidden_states = torch.cat([hidden_states, attn.mlp_act_fn(mlp_hidden_states)], dim=-1)
        return attn.to_out(hidden_states)


_FUSED = {
    Flux2AttnProcessor: FusedFlux2AttnProcessor,
    Flux2ParallelSelfAttnProcessor: FusedFlux2ParallelSelfAttnProcessor,
}


def install_fused_attention(adapter) -> None:
    """Swap the FLUX.2 model's position embedding and attention processors for the fused ones (reversibly)."""
    model = adapter.model
    attentions = stock_attentions(model, (Flux2Attention, Flux2ParallelSelfAttention), _FUSED)
    dype_embed = model.pos_embed
    plan_of_call = dype_embed._plan_of_call
    model.pos_embed = FusedFlux2PosEmbed(dype_embed.theta, dype_embed.axes_dim, plan_of_call)
    adapter.on_remove(lambda: setattr(model, "pos_embed", dype_embed))
    swap_processors(adapter, attentions, _FUSED, plan_of_call, "triton")
