"""Ernie-Image's attention with YaRN's attention factor where the model forms cos and sin (the angles mechanism,
adapters/mechanisms/angles.py).

ErnieImageEmbedND3 returns angles; each attention's processor takes cos and sin of them and rotates channel k with
channel k + D/2 (rotate_half), channel k by the angle on channel k. :class:`MscaleErnieProcessor` does the same
and multiplies cos and sin by the call's per-channel mscale first, which is exactly the rotation matrices of
ComfyUI's Ernie-Image embedder (`split_half_rows`) scaled pair by pair as DyPE scales any table: row k of the
matrix for (x_k, x_{k + D/2}) belongs to pair k // 2, row k + D/2 to pair D/4 + k // 2, and channel e's mscale
is that of pair e // 2. Where mscale is 1 (every pair at or below the base grid) the product is the stock cos and
sin unchanged, so the attention is stock bit for bit; the install check below makes sure of it on the model itself.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import freq_dtype


def rotate(x: Tensor, angles: Tensor, mscale: Tensor) -> Tensor:
    """x [B, L, heads, D'] rotated by `angles` [B, L, 1, D] (D <= D', channels past D untouched) with rotate_half
    pairing, cos and sin multiplied by `mscale` (per channel) and cast to x's dtype as the stock processor casts."""
    d = angles.shape[-1]
    head, rest = x[..., :d], x[..., d:]
    cos = (torch.cos(angles) * mscale).to(head.dtype)
    sin = (torch.sin(angles) * mscale).to(head.dtype)
    first, second = head.chunk(2, dim=-1)
    return torch.cat((head * cos + torch.cat((-second, first), dim=-1) * sin, rest), dim=-1)


def processor_class():
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.transformers.transformer_ernie_image import ErnieImageSingleStreamAttnProcessor

    class MscaleErnieProcessor(ErnieImageSingleStreamAttnProcessor):
        """ErnieImageSingleStreamAttnProcessor with the attention factor on cos and sin."""

        def __init__(self, mscale_of_call: Callable[[], Tensor]) -> None:
            super().__init__()
            self.mscale_of_call = mscale_of_call

        def __call__(self, attn, hidden_states: Tensor, attention_mask: Tensor | None = None,
                     freqs_cis: Tensor | None = None) -> Tensor:
            query = attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1))
            key = attn.to_k(hidden_states).unflatten(-1, (attn.heads, -1))
            value = attn.to_v(hidden_states).unflatten(-1, (attn.heads, -1))
            if attn.norm_q is not None:
                query = attn.norm_q(query)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
            if freqs_cis is not None:
                mscale = self.mscale_of_call()
                query, key = rotate(query, freqs_cis, mscale), rotate(key, freqs_cis, mscale)
            if attention_mask is not None and attention_mask.ndim == 2:  # [B, L] -> [B, 1, 1, L]
                attention_mask = attention_mask[:, None, None, :]
            out = dispatch_attention_fn(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                backend=self._attention_backend, parallel_config=self._parallel_config,
            )
            return attn.to_out[0](out.flatten(2, 3).to(query.dtype))

    return ErnieImageSingleStreamAttnProcessor, MscaleErnieProcessor


def _matches_stock(attn: nn.Module, stock, ours) -> bool:
    """Our processor with mscale 1 against the stock one on this attention: a few random tokens, plain angles of
    the module's own size, a padded key; bit for bit."""
    weight = attn.to_q.weight
    g = torch.Generator(device="cpu").manual_seed(0)
    h = torch.randn(2, 5, attn.query_dim, generator=g).to(weight.device, weight.dtype)
    angles = (torch.randn(2, 5, 1, attn.head_dim, generator=g) * 4).to(weight.device)
    mask = torch.tensor([[True] * 5, [True] * 4 + [False]], device=weight.device)
    with torch.no_grad():
        want = stock(attn, h, mask, angles)
        got = ours(attn, h, mask, angles)
    return got.dtype == want.dtype and torch.equal(got, want)


def install_attention(adapter, mscale_of_call: Callable[[], Tensor]) -> None:
    """Give every ErnieImageAttention of the model the processor with the attention factor, reversibly; refuse
    attentions running another processor (it would drop the factor) and a stock processor this one no longer
    reproduces."""
    stock_cls, ours_cls = processor_class()
    model = adapter.model
    attentions = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "ErnieImageAttention"]
    if not attentions:
        raise TypeError(f"{type(model).__name__} has no ErnieImageAttention for DyPE's attention factor")
    for name, attn in attentions:
        if type(attn.processor) is not stock_cls:
            raise TypeError(
                f"DyPE applies YaRN's attention factor in Ernie-Image's attention processor, but {name} runs "
                f"{type(attn.processor).__name__}, not {stock_cls.__name__}; restore the default processor first"
            )
    device = attentions[0][1].to_q.weight.device
    one = torch.ones((), dtype=freq_dtype(device), device=device)
    check = ours_cls(lambda: one)
    name, attn = attentions[0]
    check._attention_backend, check._parallel_config = attn.processor._attention_backend, attn.processor._parallel_config
    if not _matches_stock(attn, attn.processor, check):
        raise TypeError(
            f"dype_rope's Ernie-Image attention no longer reproduces diffusers' {stock_cls.__name__} bit for bit "
            f"on {name}; this diffusers version is not supported for DyPE's attention factor"
        )
    for _, attn in attentions:
        original = attn.processor
        ours = ours_cls(mscale_of_call)
        # the attention backend and the context-parallel settings live on the processor instance
        ours._attention_backend, ours._parallel_config = original._attention_backend, original._parallel_config
        attn.processor = ours
        adapter.on_remove(lambda attn=attn, original=original: setattr(attn, "processor", original))
