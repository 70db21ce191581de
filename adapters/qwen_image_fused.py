"""Qwen-Image with the fused kernels (`patch(..., backend="triton")`): QK-RMSNorm and RoPE in one launch per stream.

Qwen-Image rotates by complex freqs_cis (`apply_rotary_emb_qwen(..., use_real=False)`): multiplying the channel
pair (x[2j], x[2j+1]) read as a complex number by mscale * exp(i * angle) is the interleaved rotation, so the
kernels apply it unchanged. Swapped, and undone exactly by the patch handle:

* `model.pos_embed` for :class:`FusedQwenEmbedRope`, which returns the (image, text) *positions* [N, 3] instead
  of the (image, text) complex tables [N, D/2]. Both have the tables' first dimension, so the context-parallel
  split diffusers applies to this output (`_cp_plan["pos_embed"]`) shards positions exactly as it shards tables;
* every QwenDoubleStreamAttnProcessor2_0 for :class:`FusedQwenDoubleStreamAttnProcessor`: image and text tokens
  have their own norm weights, so one kernel launch each.

The plan is the call's one plan, read from the adapter (the embedding builds it in the same forward): the
kernels read it in its full precision. Called with complex tables, the fused processor rotates through the table
kernel instead. Other processors are refused at patch time: they could not read positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dype_rope.kernels import rope_qk_tables

from .fused_qk import FusedProcessor, norm_rope, plan_of_step, stock_attentions, swap_processors
from .parallel import swap_module
from .qwen_image_embed import DyPEQwenEmbedRope, image_list, qwen_positions

from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.attention_processor import Attention
from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0


class FusedQwenEmbedRope(DyPEQwenEmbedRope):
    """The DyPE embedding, handing out (image, text) positions [N, 3] instead of complex tables."""

    def forward(self, video_fhw, device: torch.device = None, max_txt_seq_len: int | Tensor | None = None):
        if max_txt_seq_len is None:
            raise ValueError("`max_txt_seq_len` must be provided.")
        shapes = image_list(video_fhw)
        device = torch.device("cpu") if device is None else torch.device(device)
        self._plan_of_call(shapes, device)  # builds the call's plan, which the processors read
        return qwen_positions(shapes, int(max_txt_seq_len), self.scale_rope, device)


def _norm_rope_tables(norm_q, norm_k, q: Tensor, k: Tensor, freqs: Tensor | None, backend: str):
    q = q if norm_q is None else norm_q(q)
    k = k if norm_k is None else norm_k(k)
    if freqs is None:
        return q, k
    # freqs_cis = mscale * exp(i * angle) per pair: its real and imaginary parts are the pair's cos and sin
    cos, sin = (part.float().repeat_interleave(2, dim=-1) for part in (freqs.real, freqs.imag))
    return rope_qk_tables(q, k, cos, sin, "interleaved", 1, backend=backend)


class FusedQwenDoubleStreamAttnProcessor(FusedProcessor, QwenDoubleStreamAttnProcessor2_0):
    """QwenDoubleStreamAttnProcessor2_0 with norm + RoPE through the fused kernels."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor = None,
        encoder_hidden_states_mask: Tensor = None,
        attention_mask: Tensor | None = None,
        image_rotary_emb: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        if encoder_hidden_states is None:
            raise ValueError(f"{type(self).__name__} requires encoder_hidden_states (text stream)")
        if attention_mask is not None:
            raise ValueError(
                f"{type(self).__name__} does not accept an external attention_mask; pass encoder_hidden_states_mask"
            )
        if encoder_hidden_states_mask is not None:
            image_mask = hidden_states.new_ones(hidden_states.shape[:2], dtype=torch.bool)
            attention_mask = torch.cat([encoder_hidden_states_mask, image_mask], dim=1)[:, None, None, :]

        head_dim = attn.inner_dim // attn.heads
        heads = lambda x: x.unflatten(-1, (-1, head_dim))  # noqa: E731
        img_q, img_k, img_v = (heads(proj(hidden_states)) for proj in (attn.to_q, attn.to_k, attn.to_v))
        txt_q, txt_k, txt_v = (
            heads(proj(encoder_hidden_states)) for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
        )

        # complex tables (stock) or real positions (FusedQwenEmbedRope): a dtype test, fixed when compiled
        if image_rotary_emb is not None and not image_rotary_emb[0].is_complex():
            img_pos, txt_pos = image_rotary_emb
            plan = self.plan_of_call()
            img_q, img_k = norm_rope(attn.norm_q, attn.norm_k, img_q, img_k, img_pos, plan, self.backend)
            txt_q, txt_k = norm_rope(attn.norm_added_q, attn.norm_added_k, txt_q, txt_k, txt_pos, plan, self.backend)
        else:
            img_freqs, txt_freqs = (None, None) if image_rotary_emb is None else image_rotary_emb
            img_q, img_k = _norm_rope_tables(attn.norm_q, attn.norm_k, img_q, img_k, img_freqs, self.backend)
            txt_q, txt_k = _norm_rope_tables(attn.norm_added_q, attn.norm_added_k, txt_q, txt_k, txt_freqs,
                                             self.backend)

        query, key = torch.cat([txt_q, img_q], dim=1), torch.cat([txt_k, img_k], dim=1)
        joint = dispatch_attention_fn(
            query, key, torch.cat([txt_v, img_v], dim=1), attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=self._parallel_config,
        )
        joint = joint.flatten(2, 3).to(query.dtype)
        n_text = encoder_hidden_states.shape[1]
        img_out = attn.to_out[0](joint[:, n_text:].contiguous())
        if len(attn.to_out) > 1:
            img_out = attn.to_out[1](img_out)
        return img_out, attn.to_add_out(joint[:, :n_text].contiguous())


def install_fused_attention(adapter) -> None:
    """Swap the Qwen-Image model's position embedding and attention processors for the fused ones (reversibly)."""
    model = adapter.model
    fused_for = {QwenDoubleStreamAttnProcessor2_0: FusedQwenDoubleStreamAttnProcessor}
    attentions = stock_attentions(model, (Attention,), fused_for)
    swap_module(adapter, "pos_embed", FusedQwenEmbedRope(model.pos_embed, model.pos_embed._plan_of_call))
    swap_processors(adapter, attentions, fused_for, plan_of_step(adapter), "triton")
