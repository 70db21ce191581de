"""FLUX.2 family: diffusers' Flux2Transformer2DModel (FLUX.2 dev, FLUX.2 Klein) and its Flux2PosEmbed.

Four RoPE axes (T, H, W, L) with theta 2000. Only H and W (rows, columns) are rescaled: T separates the
generated image (T = 0) from reference images (T = 10, 20, ...), L indexes text tokens, and neither grows
with the image. Reference images keep their own positions; the scale comes from the tokens on T = 0.
The replacement returns the same interleaved (cos, sin) tables as Flux2PosEmbed, so attention is untouched.
"""

from __future__ import annotations

from torch import nn

from dype_rope.rope import RopePlan, check_axes_dims
from dype_rope.timestep import diffusion_time

from .base import Adapter, image_spans, register_adapter
from .flux import DyPEFluxPosEmbed

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_flux2 import Flux2PosEmbed, Flux2Transformer2DModel
except ImportError:  # pragma: no cover - exercised only without diffusers
    Flux2PosEmbed = Flux2Transformer2DModel = None

FLUX2_BASE_GRID = (64, 64)  # 1024 px at 16 px per token (VAE factor 8, 2x2 packing)


class DyPEFlux2PosEmbed(DyPEFluxPosEmbed):
    """Drop-in for Flux2PosEmbed: forward(ids [L, 4]) -> (cos, sin) [L, D], interleaved, float32."""


@register_adapter(*(c for c in (Flux2Transformer2DModel,) if c is not None), detect=True)
class Flux2Adapter(Adapter):
    name = "flux2"
    pixels_per_token = 16
    rescaled_axes = (1, 2)

    @classmethod
    def detects(cls, model: nn.Module) -> bool:
        return Flux2PosEmbed is not None and isinstance(getattr(model, "pos_embed", None), Flux2PosEmbed)

    def default_base_grid(self) -> tuple[int, int]:
        return FLUX2_BASE_GRID

    def install(self) -> None:
        model = self.model
        original = model.pos_embed
        if isinstance(original, DyPEFluxPosEmbed):
            raise RuntimeError(f"{type(model).__name__}.pos_embed is already a DyPE embedding (a copy of a patched model?)")
        if not (Flux2PosEmbed is not None and isinstance(original, Flux2PosEmbed)):
            raise TypeError(f"{type(model).__name__}.pos_embed is {type(original).__name__}, not Flux2PosEmbed")
        head_dim = getattr(getattr(model, "config", None), "attention_head_dim", None)
        axes_dims = check_axes_dims(original.axes_dim, head_dim)
        if len(axes_dims) != 4:
            raise ValueError(f"the FLUX.2 adapter expects 4 RoPE axes (T, H, W, L), got {len(axes_dims)}")
        theta = float(original.theta)
        base_lens = (1.0, *map(float, self.base_grid), 1.0)
        step = self.step

        def plan_of_call() -> RopePlan:
            if step.ids is None:
                raise RuntimeError(
                    f"the DyPE position embedding of {type(model).__name__} was called outside the model's forward "
                    "(or without img_ids); call the patched model itself"
                )
            if step.plan is None:  # pos_embed runs twice per call (image, text): one plan serves both
                spans = image_spans(step.ids)
                t = diffusion_time(step.timestep, dtype=spans.dtype, device=spans.device)
                self.plan_step(t, spans, axes_dims, theta, base_lens)
            return step.plan

        model.pos_embed = DyPEFlux2PosEmbed(original.theta, original.axes_dim, plan_of_call)
        self.on_remove(lambda: setattr(model, "pos_embed", original))
        self.hook_calls(self.capture("timestep", "img_ids"))
