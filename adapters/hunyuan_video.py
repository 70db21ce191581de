"""HunyuanVideo family: diffusers' HunyuanVideoTransformer3DModel (text- and image-to-video), every model
whose `rope` is a HunyuanVideoRotaryPosEmbed.

The replacement is the rotary module itself: `model.rope` becomes a :class:`DyPEHunyuanVideoRotaryPosEmbed`
with the same name and attributes (`patch_size`, `patch_size_t`, `rope_dim`, `theta`). Each head's channels
hold (frames, rows, columns) blocks of `rope_dim` channels (16 / 56 / 56 in the released model), interleaved
pairs, theta 256. The stock module computes frequencies and angles in float32; so does the replacement
(after DyPE's schedule has run in float64), which keeps a grid at or below the base bit-exact.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims

from .base import register_adapter
from .parallel import swap_module
from .video import VideoAdapter, grid_tables, latent_grid

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_hunyuan_video import (
        HunyuanVideoRotaryPosEmbed,
        HunyuanVideoTransformer3DModel,
    )
except ImportError:  # pragma: no cover - exercised only without diffusers
    HunyuanVideoRotaryPosEmbed = HunyuanVideoTransformer3DModel = None

# 720 x 1280 px at 16 px per token (VAE factor 8, 2 x 2 patches): HunyuanVideo's largest training resolution.
HUNYUAN_VIDEO_BASE_GRID = (45, 80)


class DyPEHunyuanVideoRotaryPosEmbed(nn.Module):
    """Drop-in for HunyuanVideoRotaryPosEmbed: forward(latent [B, C, F, H, W]) -> (cos, sin) [F*H*W, D], float32."""

    def __init__(self, original: nn.Module, plan_of_call: Callable[[tuple[int, int, int], torch.device], RopePlan]):
        super().__init__()
        self.patch_size = original.patch_size
        self.patch_size_t = original.patch_size_t
        self.rope_dim = original.rope_dim
        self.theta = original.theta
        self._plan_of_call = plan_of_call

    def forward(self, hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        grid = latent_grid(hidden_states, (self.patch_size_t, self.patch_size, self.patch_size))
        plan = self._plan_of_call(grid, hidden_states.device)
        return grid_tables(grid, plan, self.rope_dim)

    def extra_repr(self) -> str:
        return f"rope_dim={list(self.rope_dim)}, theta={self.theta}"


@register_adapter(*(c for c in (HunyuanVideoTransformer3DModel,) if c is not None), detect=True)
class HunyuanVideoAdapter(VideoAdapter):
    """HunyuanVideo: rows and columns rescaled; frames too when base_grid = (frames, rows, columns)."""

    name = "hunyuan_video"
    pixels_per_token = 16

    @classmethod
    def detects(cls, model: nn.Module) -> bool:
        return HunyuanVideoRotaryPosEmbed is not None and isinstance(
            getattr(model, "rope", None), HunyuanVideoRotaryPosEmbed
        )

    def default_base_grid(self) -> tuple[int, int]:
        return HUNYUAN_VIDEO_BASE_GRID

    def install(self) -> None:
        model = self.model
        original = self.stock_encoding("rope", HunyuanVideoRotaryPosEmbed, DyPEHunyuanVideoRotaryPosEmbed)
        head_dim = getattr(getattr(model, "config", None), "attention_head_dim", None)
        axes_dims = check_axes_dims(original.rope_dim, head_dim)
        if len(axes_dims) != 3:
            raise ValueError(f"HunyuanVideo's RoPE has 3 axes (frames, rows, columns), got {len(axes_dims)}")
        theta = float(original.theta)

        def plan_of_call(grid: tuple[int, int, int], device: torch.device) -> RopePlan:
            return self.video_plan(grid, device, axes_dims, theta, torch.float32)

        swap_module(self, "rope", DyPEHunyuanVideoRotaryPosEmbed(original, plan_of_call))
        self.hook_calls(self.capture("timestep"))

