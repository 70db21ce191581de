"""Lumina2: complex128 tables on (caption index, row, column) positions, time running the other way (0 = noise),
base grid from the model's own sample_size."""

from __future__ import annotations

import torch

from .row import Family, RopeLayout, Sampler, complex_pairs, flow_match
from .tiny import tiny

TEXT = 5

TINY_LUMINA2 = dict(
    sample_size=16,
    patch_size=2,
    in_channels=4,
    hidden_size=64,
    num_layers=1,
    num_refiner_layers=1,
    num_attention_heads=2,
    num_kv_heads=1,
    multiple_of=16,
    axes_dim_rope=(8, 12, 12),
    axes_lens=(64, 64, 64),
    cap_feat_dim=8,
)
# Lumina-Image-2.0's scheduler config (FlowMatchEulerDiscreteScheduler, fixed shift).
LUMINA2_SCHEDULER = dict(num_train_timesteps=1000, shift=6.0)


def tiny_lumina2(seed: int = 0, **overrides):
    return tiny("Lumina2Transformer2DModel", TINY_LUMINA2, seed, **overrides)


def lumina2_inputs(grid, batch=1, cond=None, seed=1, text_len=TEXT):
    g = torch.Generator().manual_seed(seed)
    p = TINY_LUMINA2["patch_size"]
    h, w = grid
    return dict(
        hidden_states=torch.randn(batch, TINY_LUMINA2["in_channels"], h * p, w * p, generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, TINY_LUMINA2["cap_feat_dim"], generator=g),
        encoder_attention_mask=torch.ones(batch, text_len, dtype=torch.bool),
    )


def hand_positions(grid, cap_len=TEXT) -> torch.Tensor:
    """Lumina2's layout: caption k at (k, 0, 0), every image token at (cap_len, row, col)."""
    h, w = grid
    caption = [(k, 0, 0) for k in range(cap_len)]
    image = [(cap_len, r, c) for r in range(h) for c in range(w)]
    return torch.tensor(caption + image, dtype=torch.float64)


LUMINA2 = Family(
    name="lumina2",
    adapter="lumina2",
    build=tiny_lumina2,
    make_inputs=lambda grid, batch, cond, seed: lumina2_inputs(grid, batch, cond, seed),
    time_arg="timestep",
    pipeline_time=lambda ts: 1 - ts / 1000,  # the pipeline passes 1 - t / num_train_timesteps
    encoding="rope_embedder",
    layout=RopeLayout(
        axes=(8, 12, 12),
        theta=10000.0,
        tables=lambda out: [complex_pairs(out[3][0])],  # the joint (caption + image) table
        positions=lambda grid, cond, calls: [hand_positions(grid)],
        dtype=torch.complex128,
        tol=1e-12,
    ),
    base=(4, 6),
    below=(((4, 6), (4, 6)), ((2, 5), (4, 6))),
    above=(8, 9),
    default_base=(8, 8),  # sample_size 16 latent px / patch 2
    samplers=(Sampler("lumina2", lambda: flow_match(LUMINA2_SCHEDULER, 4096)),),
    # Lumina2's own forward reads caption lengths on the host (`.tolist()`) and branches on them: even the stock
    # model cannot compile as one full graph.
    fullgraph=False,
)
