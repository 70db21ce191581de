"""FLUX family: diffusers' FluxTransformer2DModel and every model built on its FluxPosEmbed
(FLUX.1 dev / schnell / Kontext / Fill, Chroma, ...).

The replacement is the position-encoding module itself: `model.pos_embed` becomes a :class:`DyPEFluxPosEmbed`
that keeps the name (diffusers' `_skip_layerwise_casting_patterns` matches it) and the attributes
(`theta`, `axes_dim`) of the original, and returns the same (cos, sin) tables, rescaled per step.
Axis 0 (text / frame index) is never rescaled; axes 1 and 2 (rows, columns) are.
"""

from __future__ import annotations

from torch import nn

from dype_rope.rope import RopePlan, check_axes_dims
from dype_rope.timestep import diffusion_time

from .base import Adapter, image_spans, register_adapter
from .flux_embed import DyPEFluxPosEmbed

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed, FluxTransformer2DModel
except ImportError:  # pragma: no cover - exercised only without diffusers
    FluxPosEmbed = FluxTransformer2DModel = None

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

        def plan_of_call() -> RopePlan:
            step = self.step
            if step.ids is None:
                raise self.outside_forward()
            if step.plan is None:  # one plan per call, however often the model embeds positions (FLUX.2: twice)
                spans = image_spans(step.ids)  # from the full ids, before any context-parallel split
                t = diffusion_time(step.timestep, dtype=spans.dtype, device=spans.device)
                self.plan_step(t, spans, axes_dims, theta, base_lens)
            return step.plan

        model.pos_embed = self.dype_embed_cls(original.theta, original.axes_dim, plan_of_call)
        self.on_remove(lambda: setattr(model, "pos_embed", original))
        self.hook_calls(self.capture("timestep", "img_ids"))
        if self.backend == "triton":
            self.install_fused()

    def install_fused(self) -> None:
        """backend="triton": swap attention for the fused processors (imported here: they need Triton)."""
        from .flux_fused import install_fused_attention

        install_fused_attention(self)
