"""Z-Image family: diffusers' ZImageTransformer2DModel (Z-Image, Z-Image-Turbo, the Omni variant) and its
RopeEmbedder.

The rope embedder is a plain object, not an nn.Module: it is replaced as an attribute, with an object of
the same shape (`theta`, `axes_dims`, `axes_lens`, called with ids [N, 3]). Theta is 256. Axis 0 orders the
sequence (captions 1.., the image after them), axes 1 and 2 are rows and columns; only those two are
rescaled. The embedder runs several times per model call (image, captions, SigLIP features): one plan per
call serves them all, sized by the generated image (in Omni mode the last latent of each sample; the
conditioning images keep their own positions).

The stock tables are complex64 built from float64 angles cast to float32; the replacement does the same.
Z-Image's time runs the other way: the pipeline passes (1000 - timestep) / 1000 (0 = noise), so
t = 1 - timestep.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from dype_rope.rope import RopePlan, check_axes_dims, freq_dtype
from dype_rope.rope_formats import complex_table
from dype_rope.timestep import diffusion_time

from .base import Adapter, argument_reader, register_adapter, spans_on

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_z_image import RopeEmbedder, ZImageTransformer2DModel
except ImportError:  # pragma: no cover - exercised only without diffusers
    RopeEmbedder = ZImageTransformer2DModel = None

ZIMAGE_BASE_GRID = (64, 64)  # 1024 px at 16 px per token (VAE factor 8, 2x2 patches)


class DyPERopeEmbedder:
    """Drop-in for Z-Image's RopeEmbedder: called with ids [N, 3], returns complex64 freqs_cis [N, D/2]."""

    def __init__(self, original, plan_of_call: Callable[[torch.device], RopePlan]) -> None:
        self.theta = original.theta
        self.axes_dims = original.axes_dims
        self.axes_lens = original.axes_lens
        self.freqs_cis = original.freqs_cis
        self._plan_of_call = plan_of_call

    def __call__(self, ids: Tensor) -> Tensor:
        if ids.ndim != 2 or ids.shape[-1] != len(self.axes_dims):
            raise ValueError(f"expected position ids [N, {len(self.axes_dims)}], got shape {tuple(ids.shape)}")
        return complex_table(ids, self._plan_of_call(ids.device), angle_dtype=torch.float32)

    def __repr__(self) -> str:
        return f"DyPERopeEmbedder(theta={self.theta}, axes_dims={list(self.axes_dims)})"


def generated_latent(x) -> Tensor:
    """The latent being generated: x[0] in basic mode, the last latent of the first sample in Omni mode."""
    first = x[0]
    return first[-1] if isinstance(first, (list, tuple)) else first


@register_adapter(*(c for c in (ZImageTransformer2DModel,) if c is not None))
class ZImageAdapter(Adapter):
    name = "z-image"
    pixels_per_token = 16
    rescaled_axes = (1, 2)

    def default_base_grid(self) -> tuple[int, int]:
        return ZIMAGE_BASE_GRID

    def install(self) -> None:
        model = self.model
        original = self.stock_encoding("rope_embedder", RopeEmbedder, DyPERopeEmbedder)
        axes_dims = check_axes_dims(original.axes_dims, model.config.dim // model.config.n_heads)
        if len(axes_dims) != 3:
            raise ValueError(f"the Z-Image adapter expects 3 RoPE axes (sequence, rows, cols), got {len(axes_dims)}")
        theta = float(original.theta)
        base_lens = self.axis_base_lens(len(axes_dims))
        def plan_of_call(device: torch.device) -> RopePlan:
            step = self.step
            if step.timestep is None or step.grid is None:
                raise self.outside_forward()
            if step.plan is None:
                dtype = freq_dtype(device)
                spans = spans_on((1, *step.grid), dtype, device)
                t = diffusion_time(step.timestep, reverse=True, dtype=dtype, device=device)
                self.plan_step(t, spans, axes_dims, theta, base_lens)
            return step.plan

        read_t = argument_reader(model.forward, "t")
        read_x = argument_reader(model.forward, "x")
        read_patch = argument_reader(model.forward, "patch_size")

        def begin(args: tuple, kwargs: dict) -> None:
            step = self.step
            step.clear()
            step.timestep = read_t(args, kwargs)
            patch = int(read_patch(args, kwargs))
            height, width = generated_latent(read_x(args, kwargs)).shape[-2:]
            step.grid = (height // patch, width // patch)  # (rows, cols) of the generated image: host ints

        model.rope_embedder = DyPERopeEmbedder(original, plan_of_call)
        self.on_remove(lambda: setattr(model, "rope_embedder", original))
        self.hook_calls(begin)
