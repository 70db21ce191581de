"""Lumina-Image 2.0 family: diffusers' Lumina2Transformer2DModel and its Lumina2RotaryPosEmbed.

Three axes: axis 0 counts caption tokens (every image token sits at the caption length), axes 1 and 2 are
the image's rows and columns from 0; only rows and columns are rescaled. The stock embedding gathers rows
of complex128 tables precomputed in float64 for positions below `axes_lens`; the replacement computes the
same complex128 values from the per-step plan at the positions themselves, so it also covers grids longer
than `axes_lens`. Everything else the embedding does (patchifying, splitting captions from image tokens) is
inherited unchanged.

Lumina2's time runs the other way: the pipeline passes 1 - sigma (0 = noise), so t = 1 - timestep.
The base grid is the model's own sample_size (latent pixels) divided by its patch size.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims, freq_dtype
from dype_rope.rope_formats import complex_table
from dype_rope.timestep import diffusion_times

from .base import Adapter, register_adapter

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_lumina2 import Lumina2RotaryPosEmbed, Lumina2Transformer2DModel
except ImportError:  # pragma: no cover - exercised only without diffusers
    Lumina2RotaryPosEmbed = Lumina2Transformer2DModel = None

VAE_FACTOR = 8


if Lumina2RotaryPosEmbed is not None:

    class DyPELumina2RotaryPosEmbed(Lumina2RotaryPosEmbed):
        """Drop-in for Lumina2RotaryPosEmbed: the stock forward, with tables from the per-call plan."""

        def __init__(self, original: nn.Module, plan_of_call: Callable[[Tensor], RopePlan]) -> None:
            nn.Module.__init__(self)  # the stock __init__ would rebuild tables this class never reads
            self.theta = original.theta
            self.axes_dim = original.axes_dim
            self.axes_lens = original.axes_lens
            self.patch_size = original.patch_size
            self.freqs_cis = original.freqs_cis
            self._plan_of_call = plan_of_call

        def _get_freqs_cis(self, ids: Tensor) -> Tensor:
            return complex_table(ids, self._plan_of_call(ids))

else:  # pragma: no cover - exercised only without diffusers
    DyPELumina2RotaryPosEmbed = None


@register_adapter(*(c for c in (Lumina2Transformer2DModel,) if c is not None))
class Lumina2Adapter(Adapter):
    name = "lumina2"
    pixels_per_token = 16  # VAE factor 8 x patch size 2
    rescaled_axes = (1, 2)

    def default_base_grid(self) -> tuple[int, int]:
        cfg = self.model.config
        side = int(cfg.sample_size) // int(cfg.patch_size)
        return (side, side)

    def install(self) -> None:
        model = self.model
        original = self.stock_encoding("rope_embedder", Lumina2RotaryPosEmbed, DyPELumina2RotaryPosEmbed)
        if int(model.config.patch_size) * VAE_FACTOR != self.pixels_per_token:
            raise ValueError(
                f"the Lumina2 adapter assumes patch size 2 (16 px per token), the model has {model.config.patch_size}"
            )
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        axes_dims = check_axes_dims(original.axes_dim, head_dim)
        if len(axes_dims) != 3:
            raise ValueError(f"the Lumina2 adapter expects 3 RoPE axes (caption, rows, cols), got {len(axes_dims)}")
        theta = float(original.theta)
        base_lens = self.axis_base_lens(len(axes_dims))

        def plan_of_call(ids: Tensor) -> RopePlan:
            step = self.step
            if step.timestep is None:
                raise self.outside_forward()
            # Caption tokens sit at row = col = 0 and padding at 0 too, so the extents are the image's.
            dtype = freq_dtype(ids.device)
            spans = ids.reshape(-1, ids.shape[-1]).amax(dim=0).to(dtype) + 1
            # one plan per sample: the tables carry a batch dimension, so a batch may mix times
            t = diffusion_times(step.timestep, reverse=True, dtype=dtype, device=ids.device)
            return self.plan_step(t, spans, axes_dims, theta, base_lens)

        model.rope_embedder = DyPELumina2RotaryPosEmbed(original, plan_of_call)
        self.on_remove(lambda: setattr(model, "rope_embedder", original))
        self.hook_calls(self.capture("timestep"))
