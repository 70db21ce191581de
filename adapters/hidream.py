"""HiDream-I1: diffusers' HiDreamImageTransformer2DModel and its HiDreamImageEmbedND.

The embedder turns position ids [B, L, 3] (frame, row, column; text tokens and the padding of non-square
images are all zeros) into 2 x 2 rotation matrices [B, L, 1, D/2, 2, 2] = [[cos, -sin], [sin, cos]] per
interleaved pair, computed in float64 and stored as float32. `model.pe_embedder` becomes a
:class:`DyPEHiDreamEmbedND` with the same name and attributes (`theta`, `axes_dim`) that returns the same
matrices from the per-step plan, YaRN's attention temperature multiplied into all four entries as it is into
cos and sin elsewhere. The diffusion time comes from the model's `timesteps` argument (0..1000).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims
from dype_rope.timestep import diffusion_times

from .base import Adapter, image_spans, register_adapter

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_hidream_image import (
        HiDreamImageEmbedND,
        HiDreamImageTransformer2DModel,
    )
except ImportError:  # pragma: no cover - exercised only without diffusers
    HiDreamImageEmbedND = HiDreamImageTransformer2DModel = None

HIDREAM_TIMESTEP_RANGE = 1000.0


def rotation_matrices(positions: Tensor, plan: RopePlan) -> Tensor:
    """[..., L, 1, D/2, 2, 2] float32 rotation matrices for positions [..., L, n_axes], in HiDream's layout.

    The same operations as diffusers' `rope` (positions times float64 frequencies, cos and sin in float64, one
    cast at the end), so an unscaled plan reproduces the stock matrices bit for bit.
    """
    inv_freq, mscale, pair_axis = plan
    # a plan per sample ([B, D/2]) meets its sample's positions [B, L, D/2]
    angles = positions.to(inv_freq.dtype).index_select(-1, pair_axis) * inv_freq.unsqueeze(-2)
    mscale = mscale.unsqueeze(-2)
    cos, sin = angles.cos() * mscale, angles.sin() * mscale
    matrices = torch.stack([cos, -sin, sin, cos], dim=-1)
    return matrices.reshape(*matrices.shape[:-1], 2, 2).float().unsqueeze(-4)


class DyPEHiDreamEmbedND(nn.Module):
    """Drop-in for HiDreamImageEmbedND: forward(ids [B, L, n_axes]) -> [B, L, 1, D/2, 2, 2] float32."""

    def __init__(self, theta: float, axes_dim, plan_of_call: Callable[[Tensor], RopePlan]) -> None:
        super().__init__()
        self.theta = theta
        self.axes_dim = axes_dim
        self._plan_of_call = plan_of_call

    def forward(self, ids: Tensor) -> Tensor:
        return rotation_matrices(ids, self._plan_of_call(ids))

    def extra_repr(self) -> str:
        return f"theta={self.theta}, axes_dim={list(self.axes_dim)}"


@register_adapter(*(c for c in (HiDreamImageTransformer2DModel,) if c is not None))
class HiDreamAdapter(Adapter):
    name = "hidream"
    pixels_per_token = 16  # VAE factor 8, 2 x 2 patches
    rescaled_axes = (1, 2)  # axis 0 (frame) is zero for every token

    def default_base_grid(self) -> tuple[int, int]:
        # max_resolution is the training size in latent pixels (128 -> 64 tokens, 1024 px).
        config = self.model.config
        return tuple(int(r) // int(config.patch_size) for r in config.max_resolution)

    def install(self) -> None:
        model = self.model
        original = self.stock_encoding("pe_embedder", HiDreamImageEmbedND, DyPEHiDreamEmbedND)
        axes_dims = check_axes_dims(original.axes_dim)
        if len(axes_dims) != 3:
            raise ValueError(f"the HiDream adapter expects 3 RoPE axes (frame, rows, columns), got {len(axes_dims)}")
        theta = float(original.theta)
        base_lens = self.axis_base_lens(len(axes_dims))

        def plan_of_call(ids: Tensor) -> RopePlan:
            step = self.step
            if step.timestep is None:
                raise self.outside_forward()
            # The model builds its ids inside forward, so they are read here, not by the pre-hook.
            spans = image_spans(ids)  # text and padding ids are zeros: they sit on the image's corner
            # one plan per sample: the matrices carry a batch dimension, so a batch may mix times
            t = diffusion_times(step.timestep, divide_by=HIDREAM_TIMESTEP_RANGE, dtype=spans.dtype, device=spans.device)
            return self.plan_step(t, spans, axes_dims, theta, base_lens)

        model.pe_embedder = DyPEHiDreamEmbedND(original.theta, original.axes_dim, plan_of_call)
        self.on_remove(lambda: setattr(model, "pe_embedder", original))
        self.hook_calls(self.capture("timesteps"))
