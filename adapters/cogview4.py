"""CogView4: diffusers' CogView4Transformer2DModel and its CogView4RotaryPosEmbed.

How the stock encoding works: each axis of a head of D channels gets D/2 channels (D/4 rotation pairs, "half"
layout, rows first), and the frequencies are tabulated for R = rope_axes_dim (256) integer positions. An
image of n tokens on an axis looks up entry floor(i * R / n) for token i: every image, whatever its size,
spans the same R positions, at a spacing R / n that shrinks as the image grows. The model thus interpolates
positions on its own (and past n = R two tokens share an entry).

How DyPE maps onto it: at the base grid n_b (sample_size / patch_size, 64 tokens = 1024 px) the model sees
spacing R / n_b. An axis that grows to n = s * n_b keeps that training spacing (positions i * R / n_b, past
the table) and its frequencies follow the schedule for the ratio s, with YaRN's base length the R positions
the base image spans. Static PI then gives back the stock layout (omega / s at i * R / n_b is omega at
i * R / n, without the floor); Dy-PI, NTK, YaRN and the Dy- variants are DyPE on the model's own position
scale. An axis that is not rescaled keeps the stock lookup floor(i * R / n), and when no axis is rescaled the
stock module itself runs, bit for bit.

A batch may mix diffusion times: the stock processor indexes the tables `cos[None, None, :, :]`, so tables
[B, 1, S, D] become [1, 1, B, 1, S, D] and rotate the query [B, H, S, D] sample by sample, every element by
the stock expression on the same operands; the slice assignment that stores the result drops the two
leading ones. Nothing in the processor is replaced. The shape is checked at install against the stock
processor on a tiny block (per_sample.py), and each call plans per sample only while every processor of the
model is that stock one; otherwise it plans once per call and a mixed batch is refused.

The diffusion time is the model's `timestep` argument over 1000. CogView4's pipeline passes the unshifted
timesteps (it hands the scheduler shifted sigmas separately), so t is the time before the resolution shift.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import check_axes_dims, freq_dtype, rope_tables
from dype_rope.timestep import diffusion_time, diffusion_times

from .base import Adapter, register_adapter, spans_on
from .per_sample import probed, processors_hold, rotates_per_sample

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_cogview4 import (
        CogView4AttnProcessor,
        CogView4RotaryPosEmbed,
        CogView4Transformer2DModel,
        CogView4TransformerBlock,
    )
except ImportError:  # pragma: no cover - exercised only without diffusers
    CogView4AttnProcessor = CogView4RotaryPosEmbed = CogView4Transformer2DModel = CogView4TransformerBlock = None

COGVIEW4_TIMESTEP_RANGE = 1000.0


def axis_positions(n: int, table: int, base: int, rescaled: bool, dtype: torch.dtype, device) -> Tensor:
    """Positions of the n tokens of one axis: the stock lookup floor(i * table / n), or, on a rescaled axis, the
    base grid's spacing continued, i * table / base."""
    i = torch.arange(n, device=device)
    if rescaled:
        return i.to(dtype) * (table / base)
    return (i * table // n).to(dtype)


def per_sample_tables(tables):
    """Per-sample (cos, sin), each [B, S, D] (or a list of B pairs [S, D]), as the stock processor broadcasts
    them sample by sample: [B, 1, S, D]."""
    if isinstance(tables, list):
        tables = [torch.stack(t) for t in zip(*tables)]
    return tuple(t.unsqueeze(1) for t in tables)


def stock_processor_rotates_per_sample() -> str | None:
    """The probe: a tiny CogView4 block's stock processor given tables [B, 1, S, D] rotates each sample exactly
    as given its own tables [S, D]."""
    attn = CogView4TransformerBlock(dim=8, num_attention_heads=2, attention_head_dim=4, time_embed_dim=8).attn1
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(2, 6, 8, generator=g),
                  encoder_hidden_states=torch.randn(2, 3, 8, generator=g))
    tables = [(torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)) for _ in range(2)]
    return rotates_per_sample(attn, attn.processor, attn.processor, inputs, tables, per_sample_tables)


_PROBED: dict[type, bool] = {}


def stock_takes_per_sample_tables() -> bool:
    """Probed once per process (the probe checks diffusers' code, not a model)."""
    if CogView4AttnProcessor not in _PROBED:
        _PROBED[CogView4AttnProcessor] = probed("CogView4", stock_processor_rotates_per_sample)
    return _PROBED[CogView4AttnProcessor]


class DyPECogView4RotaryPosEmbed(nn.Module):
    """Drop-in for CogView4RotaryPosEmbed: forward(hidden_states [B, C, H, W]) -> (cos, sin) [H*W/p^2, D]."""

    def __init__(self, original: nn.Module, tables: Callable[[int, int, Tensor], tuple[Tensor, Tensor] | None]) -> None:
        super().__init__()
        self.dim = original.dim
        self.patch_size = original.patch_size
        self.rope_axes_dim = original.rope_axes_dim
        self.theta = original.theta
        self._stock = [original]  # a list keeps it out of the module tree (it holds no tensors)
        self._tables = tables

    def forward(self, hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        h, w = hidden_states.shape[-2] // self.patch_size, hidden_states.shape[-1] // self.patch_size
        tables = self._tables(h, w, hidden_states)
        return self._stock[0](hidden_states) if tables is None else tables

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rope_axes_dim={tuple(self.rope_axes_dim)}, theta={self.theta}"


@register_adapter(*(c for c in (CogView4Transformer2DModel,) if c is not None))
class CogView4Adapter(Adapter):
    name = "cogview4"
    pixels_per_token = 16  # VAE factor 8, 2 x 2 patches
    rescaled_axes = (0, 1)  # rows, columns

    def default_base_grid(self) -> tuple[int, int]:
        config = self.model.config
        size = int(config.sample_size) // int(config.patch_size)  # 128 latent px -> 64 tokens, 1024 px
        return (size, size)

    def install(self) -> None:
        model = self.model
        original = self.stock_encoding("rope", CogView4RotaryPosEmbed, DyPECogView4RotaryPosEmbed)
        if original.dim % 4:
            raise ValueError(f"CogView4's RoPE needs a head dim divisible by 4, got {original.dim}")
        axes_dims = check_axes_dims((original.dim // 2, original.dim // 2))
        table = tuple(int(r) for r in original.rope_axes_dim)
        theta = float(original.theta)
        base_lens = tuple(float(r) for r in table)  # the base image spans the whole table
        hold = processors_hold(model, (CogView4AttnProcessor,)) if stock_takes_per_sample_tables() else (lambda: False)

        def tables(h: int, w: int, hidden_states: Tensor) -> tuple[Tensor, Tensor] | None:
            ratios = [h / self.base_grid[0], w / self.base_grid[1]]
            if self.aspect == "isotropic":
                ratios = [max(ratios)] * 2
            if all(r <= 1 for r in ratios):
                return None
            step = self.step
            if step.timestep is None:
                raise self.outside_forward()
            device = hidden_states.device
            dtype = freq_dtype(device)
            rows, cols = (
                axis_positions(n, r, b, ratio > 1, dtype, device)
                for n, r, b, ratio in zip((h, w), table, self.base_grid, ratios)
            )
            positions = torch.stack(
                [rows.unsqueeze(1).expand(h, w), cols.unsqueeze(0).expand(h, w)], dim=-1
            ).reshape(h * w, 2)
            # one plan per sample where the batch has several times (a shape test, fixed when compiled) and every
            # processor is the probed stock one; else one for the call, the stock tables' own shape [S, D]
            ts = step.timestep
            several = isinstance(ts, Tensor) and ts.dim() > 0 and ts.numel() > 1 and hold()
            times = diffusion_times if several else diffusion_time
            t = times(ts, divide_by=COGVIEW4_TIMESTEP_RANGE, dtype=dtype, device=device)
            plan = self.plan_step(t, spans_on((h, w), dtype, device), axes_dims, theta, base_lens)
            out = rope_tables(positions, plan, "half")
            return per_sample_tables(out) if several else out

        model.rope = DyPECogView4RotaryPosEmbed(original, tables)
        self.on_remove(lambda: setattr(model, "rope", original))
        self.hook_calls(self.capture("timestep"))
