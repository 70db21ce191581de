"""FLUX with the fused kernels (`patch(..., backend="triton")`): q and k rotated in one launch per attention.

Two swaps on top of the FLUX adapter, both undone exactly by the patch handle:

* the position embedding returns :class:`FluxRope` (the call's position ids and its RopePlan, D/2 numbers per
  channel pair) instead of L x D cos / sin tables, so no table is built or read: the kernels compute the
  angles from the ids;
* every attention's FluxAttnProcessor is replaced by :class:`FusedFluxAttnProcessor`, which normalises and
  rotates q and k with one kernel per token segment (the joint blocks normalise text and image tokens with
  different weights, so they take two launches) and leaves everything else as diffusers does it.

Other processors (IP-Adapter, user processors) are refused at patch time: they would receive a FluxRope they
cannot read.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from dype_rope.kernels import rope_qk_tables
from dype_rope.rope import RopePlan

from .flux_embed import DyPEFluxPosEmbed
from .fused_qk import norm_rope, stock_attentions, swap_processors

from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor, _get_qkv_projections


class FluxRope(NamedTuple):
    """What the fused processors rotate by: positions [L, n_axes] of the whole joint sequence and the plan."""

    positions: Tensor
    plan: RopePlan


class FusedFluxPosEmbed(DyPEFluxPosEmbed):
    """The DyPE embedding, handing out the ids and the plan instead of cos / sin tables."""

    def forward(self, ids: Tensor) -> FluxRope:  # type: ignore[override]
        return FluxRope(ids, self._plan_of_call())


class FusedFluxAttnProcessor(FluxAttnProcessor):
    """FluxAttnProcessor with QK-RMSNorm + RoPE fused into one kernel (FluxRope) or the table kernel (cos, sin)."""

    def __init__(self, backend: str = "triton") -> None:
        super().__init__()
        self.backend = backend

    def __call__(
        self,
        attn: FluxAttention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        image_rotary_emb: FluxRope | tuple[Tensor, Tensor] | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        projections = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query, key, value, enc_query, enc_key, enc_value = projections
        query = query.unflatten(-1, (-1, attn.head_dim))
        key = key.unflatten(-1, (-1, attn.head_dim))
        value = value.unflatten(-1, (-1, attn.head_dim))
        joint = attn.added_kv_proj_dim is not None
        if joint:
            enc_query = enc_query.unflatten(-1, (-1, attn.head_dim))
            enc_key = enc_key.unflatten(-1, (-1, attn.head_dim))
            value = torch.cat([enc_value.unflatten(-1, (-1, attn.head_dim)), value], dim=1)

        if isinstance(image_rotary_emb, FluxRope):
            positions, plan = image_rotary_emb
            if joint:
                n_text = enc_query.shape[1]
                enc_query, enc_key = norm_rope(attn.norm_added_q, attn.norm_added_k, enc_query, enc_key,
                                                positions[..., :n_text, :], plan, self.backend)
                query, key = norm_rope(attn.norm_q, attn.norm_k, query, key, positions[..., n_text:, :], plan,
                                        self.backend)
                query, key = torch.cat([enc_query, query], dim=1), torch.cat([enc_key, key], dim=1)
            else:
                query, key = norm_rope(attn.norm_q, attn.norm_k, query, key, positions, plan, self.backend)
        else:
            query, key = attn.norm_q(query), attn.norm_k(key)
            if joint:
                query = torch.cat([attn.norm_added_q(enc_query), query], dim=1)
                key = torch.cat([attn.norm_added_k(enc_key), key], dim=1)
            if image_rotary_emb is not None:
                cos, sin = image_rotary_emb
                query, key = rope_qk_tables(query, key, cos, sin, "interleaved", 1, backend=self.backend)

        hidden_states = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return hidden_states
        encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
            [encoder_hidden_states.shape[1], hidden_states.shape[1] - encoder_hidden_states.shape[1]], dim=1
        )
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.contiguous()))
        encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())
        return hidden_states, encoder_hidden_states


def install_fused_attention(adapter) -> None:
    """Swap the FLUX model's position embedding and attention processors for the fused ones (reversibly)."""
    model = adapter.model
    fused_for = {FluxAttnProcessor: FusedFluxAttnProcessor}
    attentions = stock_attentions(model, (FluxAttention,), fused_for)
    dype_embed = model.pos_embed
    model.pos_embed = FusedFluxPosEmbed(dype_embed.theta, dype_embed.axes_dim, dype_embed._plan_of_call)
    adapter.on_remove(lambda: setattr(model, "pos_embed", dype_embed))
    swap_processors(adapter, attentions, fused_for, "triton")
