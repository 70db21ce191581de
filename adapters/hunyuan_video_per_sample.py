"""HunyuanVideo's attention taking one RoPE plan per sample: tables [B, S, D] as well as the stock [S, D].

The stock HunyuanVideoAttnProcessor2_0 imports `apply_rotary_emb` inside its `__call__`, where no private copy of
its module's globals reaches it, and the tables it is given broadcast as [1, S, 1, D] against a query [B, S, H, D]:
no shape of per-sample tables passes through it. So this processor, a subclass of the stock one (it keeps its
attention backend and parallel settings), runs the same steps in the same order: projections, QK norms, the
rotation of the video tokens (all of them in the dual-stream blocks; those before the text in the single-stream
blocks, which concatenate the text behind the video), the text projections, attention through diffusers'
dispatcher, the output projections. The one difference is the rotation: diffusers' `apply_rotary_emb` itself,
called through per_sample.py's fold, so tables [S, D] are the stock call as it was and tables [B, S, D] rotate
every sample by its own rows, each element by the stock expression on the same operands.

adapters/hunyuan_video.py checks this at install against the stock processor, on a tiny block of each kind, bit
for bit (per_sample.rotates_per_sample): a diffusers release whose processor does anything else fails that check,
and the model then keeps its stock processors and plans once per call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .per_sample import Rotary, per_sample_rotary

try:  # diffusers is optional: without it nothing here is used
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0
except ImportError:  # pragma: no cover - exercised only without diffusers
    HunyuanVideoAttnProcessor2_0 = None

if HunyuanVideoAttnProcessor2_0 is not None:
    # the query and key are [B, S, H, D]: the sequence is their axis 1
    _rotate = per_sample_rotary(apply_rotary_emb, Rotary("apply_rotary_emb", "sequence_dim"))

    def _heads(x: Tensor, heads: int) -> Tensor:
        return x.unflatten(2, (heads, -1))

    class PerSampleHunyuanVideoAttnProcessor(HunyuanVideoAttnProcessor2_0):
        """HunyuanVideoAttnProcessor2_0 taking tables [S, D] shared by the batch or [B, S, D] per sample."""

        def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                     attention_mask: Tensor | None = None, image_rotary_emb=None):
            # single-stream blocks have no text projections of their own: the text rides behind the video
            joint = attn.add_q_proj is None and encoder_hidden_states is not None
            if joint:
                hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)
            query = _heads(attn.to_q(hidden_states), attn.heads)
            key = _heads(attn.to_k(hidden_states), attn.heads)
            value = _heads(attn.to_v(hidden_states), attn.heads)
            if attn.norm_q is not None:
                query = attn.norm_q(query)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
            if image_rotary_emb is not None:
                if joint:
                    text = encoder_hidden_states.shape[1]
                    video_query = _rotate(query[:, :-text], image_rotary_emb, sequence_dim=1)
                    video_key = _rotate(key[:, :-text], image_rotary_emb, sequence_dim=1)
                    query = torch.cat([video_query, query[:, -text:]], dim=1)
                    key = torch.cat([video_key, key[:, -text:]], dim=1)
                else:
                    query = _rotate(query, image_rotary_emb, sequence_dim=1)
                    key = _rotate(key, image_rotary_emb, sequence_dim=1)
            if attn.add_q_proj is not None and encoder_hidden_states is not None:
                text_query = _heads(attn.add_q_proj(encoder_hidden_states), attn.heads)
                text_key = _heads(attn.add_k_proj(encoder_hidden_states), attn.heads)
                text_value = _heads(attn.add_v_proj(encoder_hidden_states), attn.heads)
                if attn.norm_added_q is not None:
                    text_query = attn.norm_added_q(text_query)
                if attn.norm_added_k is not None:
                    text_key = attn.norm_added_k(text_key)
                query = torch.cat([query, text_query], dim=1)
                key = torch.cat([key, text_key], dim=1)
                value = torch.cat([value, text_value], dim=1)
            hidden_states = dispatch_attention_fn(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                backend=self._attention_backend, parallel_config=self._parallel_config,
            )
            hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
            if encoder_hidden_states is not None:
                text = encoder_hidden_states.shape[1]
                hidden_states, encoder_hidden_states = hidden_states[:, :-text], hidden_states[:, -text:]
                if getattr(attn, "to_out", None) is not None:
                    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
                if getattr(attn, "to_add_out", None) is not None:
                    encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
            return hidden_states, encoder_hidden_states

else:  # pragma: no cover - exercised only without diffusers
    PerSampleHunyuanVideoAttnProcessor = None
