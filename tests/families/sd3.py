"""SD3 / SD3.5: an absolute sin-cos embedding cropped from a stored grid; DyPE rescales its frequencies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reference_dype import axis_ratios, frequencies, plain

from .row import Family, Sampler
from .tiny import tiny

# pos_embed_max_size is small (12 tokens) so that a forward at 4x the base grid runs past the stored grid, where
# the stock model raises.
TINY_SD3 = dict(
    sample_size=8,  # 8 x 8 tokens at patch size 1
    patch_size=1,
    in_channels=4,
    num_layers=1,
    attention_head_dim=8,
    num_attention_heads=2,
    joint_attention_dim=16,
    caption_projection_dim=16,
    pooled_projection_dim=8,
    out_channels=4,
    pos_embed_max_size=12,
)
STORED = TINY_SD3["sample_size"] // TINY_SD3["patch_size"]  # SD3's own base_size of the stored grid: 8 tokens
MAX = TINY_SD3["pos_embed_max_size"]
CHANNELS = TINY_SD3["attention_head_dim"] * TINY_SD3["num_attention_heads"] // 2  # per axis


def tiny_sd3(seed: int = 0, **overrides):
    """The patch projection is zero, so PatchEmbed's output is the position embedding itself."""
    model = tiny("SD3Transformer2DModel", TINY_SD3, seed, **overrides)
    with torch.no_grad():
        model.pos_embed.proj.weight.zero_()
        model.pos_embed.proj.bias.zero_()
    return model


def sd3_inputs(grid, batch=1, cond=None, seed=1, patch=1):
    """Inputs for a grid of tokens (latent pixels = patch x tokens)."""
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    return dict(
        hidden_states=torch.randn(batch, TINY_SD3["in_channels"], patch * h, patch * w, generator=g),
        encoder_hidden_states=torch.randn(batch, 5, TINY_SD3["joint_attention_dim"], generator=g),
        pooled_projections=torch.randn(batch, TINY_SD3["pooled_projection_dim"], generator=g),
    )


def reference_embedding(h, w, t, base_grid, aspect="per-axis", base_size=STORED, max_size=MAX, **schedule):
    """SD3's layout written out: row k of the stored grid sits at k * base_size / max_size, an n-token image takes
    rows (max_size - n) // 2 ..., rescaled frequencies act on the offset from the stored grid's centre, column
    channels come first, each half is [sin, cos]."""
    spacing = base_size / max_size
    centre = (max_size - 1) / 2 * spacing
    ratios = axis_ratios((h, w), base_grid, (0, 1), aspect)
    base = plain(CHANNELS, 10000.0)
    halves = []
    for n, ratio, b in zip((h, w), ratios, base_grid):
        pos = ((max_size - n) // 2 + np.arange(n)) * spacing
        if ratio <= 1:
            angles = np.outer(pos, base)
        else:
            omega, _ = frequencies(CHANNELS, 10000.0, b * spacing, ratio, t, **schedule)
            angles = centre * base[None] + np.outer(pos - centre, omega)
        halves.append(np.concatenate([np.sin(angles), np.cos(angles)], axis=1))
    rows, cols = halves
    cols, rows = np.broadcast_to(cols[None], (h, w, CHANNELS)), np.broadcast_to(rows[:, None], (h, w, CHANNELS))
    return torch.from_numpy(np.concatenate([cols, rows], -1).reshape(h * w, -1).copy())


@dataclass(frozen=True)
class SD3Layout:
    dtype: torch.dtype = torch.float32
    tol: float = 1e-5

    def seen(self, calls):
        return [out[0].double() for _, out in calls]

    def expected(self, calls, grid, base, t, aspect, cond, **schedule):
        return [reference_embedding(*grid, t, base, aspect, **schedule)]


def _sampler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)  # SD3's scheduler config
    scheduler.set_timesteps(28)
    return scheduler.timesteps, scheduler.timesteps.double() / 1000


SD3 = Family(
    name="sd3",
    adapter="sd3",
    build=tiny_sd3,
    make_inputs=lambda grid, batch, cond, seed: sd3_inputs(grid, batch, cond, seed),
    time_arg="timestep",
    pipeline_time=lambda ts: ts,  # 0 .. 1000
    encoding="pos_embed",
    layout=SD3Layout(),
    base=(6, 8),
    below=(((6, 8), (6, 8)), ((5, 7), (6, 8)), ((2, 8), (6, 8)), ((8, 8), (8, 8))),
    above=(10, 24),
    default_base=(STORED, STORED),
    samplers=(Sampler("sd3", _sampler),),
    beyond=(10, 12),  # inside the stored grid: the stock model runs there too
    none_is_stock=False,  # the embedding is recomputed on SD3's layout: equal to the stock crop within 1e-6
    direct_call=lambda: (torch.zeros(1, 4, 16, 16),),
)
