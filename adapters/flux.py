"""FLUX family: diffusers' FluxTransformer2DModel and every model built on its FluxPosEmbed
(FLUX.1 dev / schnell / Kontext / Fill, Chroma, ...).

The replacement is the position-encoding module itself: `model.pos_embed` becomes a :class:`DyPEFluxPosEmbed`
that keeps the name (diffusers' `_skip_layerwise_casting_patterns` matches it) and the attributes
(`theta`, `axes_dim`) of the original, and returns the same (cos, sin) tables, rescaled per step.
Axis 0 (text / frame index) is never rescaled; axes 1 and 2 (rows, columns) are.

A batch may mix diffusion times: the attention modules get per-sample copies of their stock processors
(per_sample.py) and the embedding returns tables [B, L, D], one plan per sample. Where a module holds a
processor DyPE has no per-sample copy of (an IP-Adapter's, one set after patching), and with backend="triton"
(the fused kernels take one plan per call), the call keeps one plan for the batch and a mixed batch is refused.
"""

from __future__ import annotations

from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims
from dype_rope.timestep import diffusion_time, diffusion_times

from .base import Adapter, image_spans, register_adapter
from .flux_embed import DyPEFluxPosEmbed
from .per_sample import Rotary, install_per_sample_processors

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_flux import (
        FluxAttnProcessor,
        FluxPosEmbed,
        FluxTransformer2DModel,
    )
except ImportError:  # pragma: no cover - exercised only without diffusers
    FluxAttnProcessor = FluxPosEmbed = FluxTransformer2DModel = None

FLUX_BASE_GRID = (64, 64)  # 1024 px at 16 px per token (VAE factor 8, 2x2 packing)


@register_adapter(*(c for c in (FluxTransformer2DModel,) if c is not None), detect=True)
class FluxAdapter(Adapter):
    name = "flux"
    pixels_per_token = 16
    rescaled_axes = (1, 2)
    axis_names = ("text", "rows", "columns")
    embed_cls = FluxPosEmbed  # the stock module this adapter replaces
    dype_embed_cls = DyPEFluxPosEmbed
    fused_attention = True  # backend="triton" swaps in the fused QK-norm + RoPE attention processors
    # stock processors that get a per-sample copy (per_sample.py): class -> the rotary function they call
    per_sample_processors = {FluxAttnProcessor: Rotary("apply_rotary_emb", "sequence_dim")}

    @classmethod
    def detects(cls, model: nn.Module) -> bool:
        return cls.embed_cls is not None and isinstance(getattr(model, "pos_embed", None), cls.embed_cls)

    def default_base_grid(self) -> tuple[int, int]:
        return FLUX_BASE_GRID

    def install(self) -> None:
        model = self.model
        original = self.stock_encoding("pos_embed", self.embed_cls, DyPEFluxPosEmbed)
        head_dim = getattr(getattr(model, "config", None), "attention_head_dim", None)
        axes_dims = check_axes_dims(original.axes_dim, head_dim)
        if len(axes_dims) != len(self.axis_names):
            raise ValueError(
                f"the {self.name} adapter expects {len(self.axis_names)} RoPE axes ({', '.join(self.axis_names)}), "
                f"got {len(axes_dims)}"
            )
        theta = float(original.theta)
        base_lens = self.axis_base_lens(len(axes_dims))
        per_sample = self.install_per_sample() if self.backend == "torch" else (lambda: False)

        def plan_of_call() -> RopePlan:
            step = self.step
            if step.ids is None:
                raise self.outside_forward()
            if step.plan is None:  # one plan per call, however often the model embeds positions (FLUX.2: twice)
                spans = image_spans(step.ids)  # from the full ids, before any context-parallel split
                # one plan per sample where the batch has several times (a shape test, fixed when compiled) and
                # every processor takes per-sample tables; else one for the call, the stock tables' own shape
                ts = step.timestep
                several = isinstance(ts, Tensor) and ts.dim() > 0 and ts.numel() > 1
                times = diffusion_times if several and per_sample() else diffusion_time
                t = times(ts, dtype=spans.dtype, device=spans.device)
                self.plan_step(t, spans, axes_dims, theta, base_lens)
            return step.plan

        model.pos_embed = self.dype_embed_cls(original.theta, original.axes_dim, plan_of_call)
        self.on_remove(lambda: setattr(model, "pos_embed", original))
        self.hook_calls(self.capture("timestep", "img_ids"))
        if self.backend == "triton":
            self.install_fused()

    def install_per_sample(self):
        processors = {cls: rotary for cls, rotary in self.per_sample_processors.items() if cls is not None}
        return install_per_sample_processors(self, processors)

    def install_fused(self) -> None:
        """backend="triton": swap attention for the fused processors (imported here: they need Triton)."""
        from .flux_fused import install_fused_attention

        install_fused_attention(self)
