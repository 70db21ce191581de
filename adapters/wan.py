"""Wan family: diffusers' WanTransformer3DModel (Wan 2.1 / 2.2 text- and image-to-video) and
WanVACETransformer3DModel, every model whose `rope` is transformer_wan's WanRotaryPosEmbed.

The replacement is the rotary module itself: `model.rope` becomes a :class:`DyPEWanRotaryPosEmbed` under
the same name, so the model's `_keep_in_fp32_modules` ("rope") and `_cp_plan` ("rope": its two outputs are
split along the sequence under context parallelism) still name it. Wan precomputes its tables once, up to
`rope_max_seq_len` positions; here they are rebuilt on every call from the call's diffusion time, on the
device, for only the positions the latent needs. Each head's channels hold (frames, rows, columns) blocks
of (D - 2 * 2 * (D // 6), 2 * (D // 6), 2 * (D // 6)) channels, interleaved pairs, theta 10000.

The tables are computed for the whole latent (Wan calls its rope before any context-parallel split), so
the scale is always that of the global grid.
"""

from __future__ import annotations

import torch
from torch import nn

from dype_rope.rope import RopePlan, check_axes_dims, freq_dtype

from .base import register_adapter
from .parallel import swap_module
from .video import VideoAdapter
from .wan_embed import DyPEWanRotaryPosEmbed

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformer3DModel
except ImportError:  # pragma: no cover - exercised only without diffusers
    WanRotaryPosEmbed = WanTransformer3DModel = None
try:
    from diffusers.models.transformers.transformer_wan_vace import WanVACETransformer3DModel
except ImportError:  # pragma: no cover
    WanVACETransformer3DModel = None

WAN_THETA = 10000.0
# 480 x 832 px at 16 px per token (VAE factor 8, 2 x 2 patches): the resolution every Wan 2.1 / 2.2
# checkpoint was trained at. The 14B models also saw 720p: pass base_resolution=(720, 1280) to keep it native.
WAN_BASE_GRID = (30, 52)
# Wan 2.2 TI2V-5B: its VAE compresses 16x, so 704 x 1280 px are 22 x 40 tokens (32 px per token).
WAN22_5B_BASE_GRID = (22, 40)
WAN22_VAE_CHANNELS = 48


def wan_axes_dims(head_dim: int) -> tuple[int, int, int]:
    """(frames, rows, columns) channels of a Wan head, as WanRotaryPosEmbed splits them."""
    hw = 2 * (head_dim // 6)
    return check_axes_dims((head_dim - 2 * hw, hw, hw), head_dim)


@register_adapter(*(c for c in (WanTransformer3DModel, WanVACETransformer3DModel) if c is not None), detect=True)
class WanAdapter(VideoAdapter):
    """Wan: rows and columns rescaled; frames too when base_grid = (frames, rows, columns)."""

    name = "wan"
    pixels_per_token = 16
    fused_attention = True  # backend="triton" swaps in the fused processors (wan_fused.py)

    @classmethod
    def detects(cls, model: nn.Module) -> bool:
        return WanRotaryPosEmbed is not None and isinstance(getattr(model, "rope", None), WanRotaryPosEmbed)

    def default_base_grid(self) -> tuple[int, int]:
        in_channels = getattr(getattr(self.model, "config", None), "in_channels", None)
        return WAN22_5B_BASE_GRID if in_channels == WAN22_VAE_CHANNELS else WAN_BASE_GRID

    def install(self) -> None:
        original = self.stock_encoding("rope", WanRotaryPosEmbed, DyPEWanRotaryPosEmbed)
        axes_dims = wan_axes_dims(original.attention_head_dim)
        if (original.t_dim, original.h_dim, original.w_dim) != axes_dims:
            raise ValueError(f"unexpected Wan RoPE split {(original.t_dim, original.h_dim, original.w_dim)}")

        def plan_of_call(grid: tuple[int, int, int], device: torch.device) -> RopePlan:
            # Wan builds its tables in float64 (float32 only where the device lacks it) and casts them once.
            # one plan per sample: WanAttnProcessor takes tables [B, L, 1, D], so a batch may mix times
            return self.video_plan(grid, device, axes_dims, WAN_THETA, freq_dtype(device), per_sample=True)

        swap_module(self, "rope", DyPEWanRotaryPosEmbed(original, plan_of_call))
        self.hook_calls(self.capture("timestep"))
        if self.backend == "triton":
            from .wan_fused import install_fused_attention  # builds on this module

            install_fused_attention(self)

