"""FLUX.2 family: diffusers' Flux2Transformer2DModel (FLUX.2 dev, FLUX.2 Klein) and its Flux2PosEmbed.

Four RoPE axes (T, H, W, L) with theta 2000. Only H and W (rows, columns) are rescaled: T separates the
generated image (T = 0) from reference images (T = 10, 20, ...), L indexes text tokens, and neither grows
with the image. Reference images keep their own positions; the scale comes from the tokens on T = 0.
The replacement returns the same interleaved (cos, sin) tables as Flux2PosEmbed, so attention is untouched
(except with backend="triton": see flux2_fused.py).

A batch may mix diffusion times as in FLUX (per_sample.py), with one difference: the model concatenates the
text and image tables along their first axis, so per-sample tables come out [L, B, D], the batch second.
The KV-cache processors (Flux2KV*) are not given per-sample copies: a model holding them plans once per call.
"""

from __future__ import annotations

from torch import Tensor

from .base import register_adapter
from .flux import FluxAdapter
from .flux_embed import DyPEFluxPosEmbed
from .per_sample import Rotary

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_flux2 import (
        Flux2AttnProcessor,
        Flux2ParallelSelfAttnProcessor,
        Flux2PosEmbed,
        Flux2Transformer2DModel,
    )
except ImportError:  # pragma: no cover - exercised only without diffusers
    Flux2AttnProcessor = Flux2ParallelSelfAttnProcessor = Flux2PosEmbed = Flux2Transformer2DModel = None

FLUX2_BASE_GRID = (64, 64)  # 1024 px at 16 px per token (VAE factor 8, 2x2 packing)


class DyPEFlux2PosEmbed(DyPEFluxPosEmbed):
    """Drop-in for Flux2PosEmbed: forward(ids [L, 4]) -> (cos, sin) [L, D], interleaved, float32; with one plan
    per sample [L, B, D], so that the model's concatenation of text and image tables (along axis 0) joins
    sequences, not batches."""

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        cos, sin = super().forward(ids)
        if cos.dim() == 3:  # a shape test: fixed when compiled
            return cos.movedim(0, 1), sin.movedim(0, 1)
        return cos, sin


@register_adapter(*(c for c in (Flux2Transformer2DModel,) if c is not None), detect=True)
class Flux2Adapter(FluxAdapter):
    """FLUX's adapter on four axes; the model embeds image and text positions in two calls per step, which
    share the call's one plan."""

    name = "flux2"
    axis_names = ("T", "H", "W", "L")
    embed_cls = Flux2PosEmbed
    dype_embed_cls = DyPEFlux2PosEmbed
    fused_attention = True  # backend="triton" swaps in FLUX.2's own fused processors (flux2_fused.py)
    per_sample_processors = {
        cls: Rotary("apply_rotary_emb", "sequence_dim", table_batch_axis=1)
        for cls in (Flux2AttnProcessor, Flux2ParallelSelfAttnProcessor)
    }

    def default_base_grid(self) -> tuple[int, int]:
        return FLUX2_BASE_GRID

    def install_fused(self) -> None:
        from .flux2_fused import install_fused_attention

        install_fused_attention(self)
