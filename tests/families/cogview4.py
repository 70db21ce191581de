"""CogView4: a position table of rope_axes_dim entries per axis, looked up at floor(i * table / n) by the stock
model; rescaled axes keep the base grid's spacing. The real model's proportions are kept where DyPE reads them:
rope_axes_dim / base grid = 4 positions per token at the base grid (256 / 64 for CogView4-6B, 32 / 8 here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reference_dype import axis_ratios, frequencies

from .row import Family, Sampler
from .tiny import tiny

TINY_COGVIEW4 = dict(
    patch_size=2,
    in_channels=4,
    out_channels=4,
    num_layers=1,
    attention_head_dim=16,  # 8 channels, 4 rotation pairs per axis
    num_attention_heads=2,
    text_embed_dim=8,
    time_embed_dim=8,
    condition_dim=4,
    sample_size=16,  # latent pixels: an 8 x 8 token base grid
    rope_axes_dim=(32, 32),
)
BASE = TINY_COGVIEW4["sample_size"] // TINY_COGVIEW4["patch_size"]  # 8 tokens
TABLE = TINY_COGVIEW4["rope_axes_dim"][0]  # 32 positions
HALF = TINY_COGVIEW4["attention_head_dim"] // 2  # channels per axis


def tiny_cogview4(seed: int = 0, **overrides):
    return tiny("CogView4Transformer2DModel", TINY_COGVIEW4, seed, **overrides)


def cogview4_inputs(grid, batch=1, cond=None, seed=1, text_len=4):
    """Inputs for a grid of tokens (latent pixels 2h x 2w)."""
    g = torch.Generator().manual_seed(seed)
    p = TINY_COGVIEW4["patch_size"]
    h, w = grid
    px = torch.tensor([[16.0 * h, 16.0 * w]]).repeat(batch, 1)
    return dict(
        hidden_states=torch.randn(batch, TINY_COGVIEW4["in_channels"], p * h, p * w, generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, TINY_COGVIEW4["text_embed_dim"], generator=g),
        original_size=px,
        target_size=px,
        crop_coords=torch.zeros(batch, 2),
    )


def reference_tables(h, w, t, base, aspect="per-axis", **schedule):
    """Rows then columns, D/4 pairs each, "half" layout; a rescaled axis keeps the base grid's spacing
    TABLE / base, any other axis looks up floor(i * TABLE / n)."""
    ratios = axis_ratios((h, w), base, (0, 1), aspect)
    freqs, scales = [], []
    for n, ratio, b in zip((h, w), ratios, base):
        i = np.arange(n)
        pos = i * (TABLE / b) if ratio > 1 else np.floor(i * TABLE / n)
        omega, mscale = frequencies(HALF, 10000.0, float(TABLE), ratio, t, **schedule)
        freqs.append(np.outer(pos, omega))
        scales.append(np.full(HALF // 2, mscale))
    rows, cols = freqs
    angles = np.concatenate([np.repeat(rows, w, axis=0), np.tile(cols, (h, 1))], axis=1)
    mscale = np.concatenate(scales)
    return torch.from_numpy(np.stack([np.cos(angles) * mscale, np.sin(angles) * mscale], -1))


@dataclass(frozen=True)
class CogView4Layout:
    dtype: torch.dtype = torch.float32
    tol: float = 1e-6

    def seen(self, calls):
        out = []
        for _, (cos, sin) in calls:  # "half" layout: both halves hold the same pairs
            quarter = cos.shape[-1] // 2
            assert torch.equal(cos[:, :quarter], cos[:, quarter:]) and torch.equal(sin[:, :quarter], sin[:, quarter:])
            out.append(torch.stack([cos[:, :quarter], sin[:, :quarter]], -1).double())
        return out

    def expected(self, calls, grid, base, t, aspect, cond, **schedule):
        return [reference_tables(*grid, t, base, aspect, **schedule)]


def pipeline_timesteps(steps: int = 28):
    """Timesteps as CogView4's pipeline sets them: its scheduler config, integer timesteps, shifted sigmas."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.cogview4.pipeline_cogview4 import calculate_shift, retrieve_timesteps

    scheduler = FlowMatchEulerDiscreteScheduler(
        base_shift=0.25, max_shift=0.75, base_image_seq_len=256, use_dynamic_shifting=True, time_shift_type="linear"
    )
    timesteps = np.linspace(1000, 1.0, steps).astype(np.int64).astype(np.float32)
    timesteps, _ = retrieve_timesteps(
        scheduler, steps, "cpu", timesteps, timesteps / 1000, mu=calculate_shift(16 * 16, 256, 0.25, 0.75)
    )
    return timesteps, timesteps.double() / 1000


COGVIEW4 = Family(
    name="cogview4",
    adapter="cogview4",
    build=tiny_cogview4,
    make_inputs=lambda grid, batch, cond, seed: cogview4_inputs(grid, batch, cond, seed),
    time_arg="timestep",
    pipeline_time=lambda ts: ts,  # 0 .. 1000
    encoding="rope",
    layout=CogView4Layout(),
    base=(8, 6),
    below=(((8, 8), (8, 8)), ((6, 8), (8, 8)), ((3, 5), (8, 8)), ((8, 6), (8, 6))),
    above=(12, 20),
    default_base=(BASE, BASE),
    samplers=(Sampler("cogview4", pipeline_timesteps),),
    none_is_stock=False,  # a rescaled axis keeps the base grid's spacing, the stock lookup stretches the table
    direct_call=lambda: (torch.zeros(1, 4, 32, 32),),
)
