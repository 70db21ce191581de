"""HunyuanVideo family: diffusers' HunyuanVideoTransformer3DModel (text- and image-to-video), every model
whose `rope` is a HunyuanVideoRotaryPosEmbed.

The replacement is the rotary module itself: `model.rope` becomes a :class:`DyPEHunyuanVideoRotaryPosEmbed`
with the same name and attributes (`patch_size`, `patch_size_t`, `rope_dim`, `theta`). Each head's channels
hold (frames, rows, columns) blocks of `rope_dim` channels (16 / 56 / 56 in the released model), interleaved
pairs, theta 256. The stock module computes frequencies and angles in float32; so does the replacement
(after DyPE's schedule has run in float64), which keeps a grid at or below the base bit-exact.

A batch may mix diffusion times: the attention modules get per-sample copies of their stock processors
(hunyuan_video_per_sample.py) and the module returns tables [B, F*H*W, D], one plan per sample. The copies are
checked at install against the stock processor on a tiny block of each kind, bit for bit; where that check fails
(a diffusers release that changed the processor), where a module later holds another processor, and with a
context-parallel plan, the call plans once and a mixed batch is refused.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims

from .base import register_adapter
from .hunyuan_video_per_sample import PerSampleHunyuanVideoAttnProcessor
from .parallel import swap_module
from .per_sample import probed, rotates_per_sample
from .video import VideoAdapter, grid_tables, latent_grid

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_hunyuan_video import (
        HunyuanVideoAttnProcessor2_0,
        HunyuanVideoRotaryPosEmbed,
        HunyuanVideoSingleTransformerBlock,
        HunyuanVideoTransformer3DModel,
        HunyuanVideoTransformerBlock,
    )
except ImportError:  # pragma: no cover - exercised only without diffusers
    HunyuanVideoRotaryPosEmbed = HunyuanVideoTransformer3DModel = HunyuanVideoAttnProcessor2_0 = None

# 720 x 1280 px at 16 px per token (VAE factor 8, 2 x 2 patches): HunyuanVideo's largest training resolution.
HUNYUAN_VIDEO_BASE_GRID = (45, 80)


def per_sample_processor_is_stock() -> str | None:
    """The probe: on a tiny dual-stream and a tiny single-stream block, the per-sample processor given tables
    [B, S, D] gives each sample, bit for bit, what the stock processor gives it with its own tables [S, D], and
    given shared tables it is the stock processor; with the text mask the model builds ([B, 1, 1, N])."""
    g = torch.Generator().manual_seed(0)
    blocks = (HunyuanVideoTransformerBlock(2, 4, mlp_ratio=1.0),  # dual stream: text projected on its own
              HunyuanVideoSingleTransformerBlock(2, 4, mlp_ratio=1.0))  # single stream: text behind the video
    for block in blocks:
        attn = block.attn
        mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
        mask[1, ..., -1] = False  # the second sample's last text token is padding
        inputs = dict(hidden_states=torch.randn(2, 6, 8, generator=g),
                      encoder_hidden_states=torch.randn(2, 3, 8, generator=g), attention_mask=mask)
        tables = [(torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)) for _ in range(2)]
        mine = copy.copy(attn.processor)
        mine.__class__ = PerSampleHunyuanVideoAttnProcessor
        failure = rotates_per_sample(attn, mine, attn.processor, inputs, tables,
                                     lambda ts: tuple(torch.stack(t) for t in zip(*ts)))
        if failure is not None:
            return f"{type(block).__name__}: {failure}"
    return None


_PROBED: dict[type, bool] = {}


def per_sample_processor_holds() -> bool:
    """Probed once per process (the probe checks diffusers' code, not a model)."""
    if HunyuanVideoAttnProcessor2_0 not in _PROBED:
        _PROBED[HunyuanVideoAttnProcessor2_0] = probed("HunyuanVideo", per_sample_processor_is_stock)
    return _PROBED[HunyuanVideoAttnProcessor2_0]


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
        per_sample = self.install_per_sample() if per_sample_processor_holds() else (lambda: False)

        def plan_of_call(grid: tuple[int, int, int], device: torch.device) -> RopePlan:
            # one plan per sample where the batch has several times (a shape test, fixed when compiled), every
            # attention holds its per-sample copy and no parallel plan splits the tables; else one for the call
            ts = self.step.timestep
            several = isinstance(ts, Tensor) and ts.dim() > 0 and ts.numel() > 1
            unsplit = getattr(model, "_parallel_config", None) is None
            return self.video_plan(grid, device, axes_dims, theta, torch.float32,
                                   per_sample=several and unsplit and per_sample())

        swap_module(self, "rope", DyPEHunyuanVideoRotaryPosEmbed(original, plan_of_call))
        self.hook_calls(self.capture("timestep"))

    def install_per_sample(self) -> Callable[[], bool]:
        """Give every attention holding the stock processor a per-sample copy of it (its attention backend and
        parallel settings kept), undone by remove() where the module still holds DyPE's. Returns a host-only
        check that every one of them still does (the text refiner's attention takes no tables)."""
        swapped = []
        for module in self.model.modules():
            original = getattr(module, "processor", None)
            if type(original) is not HunyuanVideoAttnProcessor2_0 or not hasattr(module, "set_processor"):
                continue
            mine = copy.copy(original)
            mine.__class__ = PerSampleHunyuanVideoAttnProcessor
            module.set_processor(mine)
            swapped.append((module, mine))

            def undo(module=module, original=original, mine=mine) -> None:
                if module.processor is mine:
                    module.set_processor(original)

            self.on_remove(undo)
        return lambda: bool(swapped) and all(m.processor is p for m, p in swapped)

