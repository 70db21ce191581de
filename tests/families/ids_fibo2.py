"""Bria-Fibo 2: a plain RopeEmbedder object (not a module) indexing complex tables with integer ids the model builds
itself: gist tokens on planes 1.., the image on plane max_num_gist_tokens + 1, context images on the planes after."""

from __future__ import annotations

import torch

from .ids_flux_like import SAMPLERS
from .row import Family, RopeLayout, complex_pairs
from .tiny import grid_ids, tiny

TEXT = 5
TINY_FIBO2 = dict(
    in_channels=4, patch_size=2, dim=32, n_layers=1, n_refiner_layers=1, n_heads=2, cap_feat_dim=8,
    injection_layer_ids=(0,), perceiver_num_layers=1, min_num_gist_tokens=2, max_num_gist_tokens=4, gist_step=2,
    gist_min_text_len=1, gist_max_text_len=8, axes_dims=(4, 6, 6), axes_lens=(16, 128, 128),
)
IMAGE_PLANE = TINY_FIBO2["max_num_gist_tokens"] + 1
GIST = 4  # gist tokens of a 5-token prompt: min 2 + (5 - 1) / 7 * 2, rounded up to a multiple of 2


def fibo2_inputs(grid, batch, cond, seed):
    g = torch.Generator().manual_seed(seed)
    p = TINY_FIBO2["patch_size"]
    x = dict(
        hidden_states=torch.randn(batch, 4, grid[0] * p, grid[1] * p, generator=g),
        encoder_hidden_states=torch.randn(batch, 2, TEXT, 8, generator=g),  # the Perceiver's bundle, one injection
    )
    if cond is not None:  # an image to edit
        x["context_latents"] = [torch.randn(batch, 4, cond[0] * p, cond[1] * p, generator=g)]
    return x


def plane(grid, k):
    return grid_ids(*grid, k).double()


def fibo2_positions(grid, cond, calls):
    """Call 1: the image on its plane, then the context image on the next; call 2: the gist tokens."""
    image = plane(grid, IMAGE_PLANE)
    if cond is not None:
        image = torch.cat([image, plane(cond, IMAGE_PLANE + 1)])
    gist = torch.stack([torch.arange(1, GIST + 1), torch.zeros(GIST), torch.zeros(GIST)], -1).double()
    return [image, gist]


BRIA_FIBO2 = Family(
    name="bria-fibo2",
    adapter="bria-fibo2",
    build=lambda seed=0, **o: tiny("BriaFibo2Transformer2DModel", TINY_FIBO2, seed, **o),
    make_inputs=fibo2_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts / 1000,  # BriaFibo2Pipeline passes t / 1000
    encoding="rope_embedder",
    layout=RopeLayout(
        axes=(4, 6, 6),
        theta=256.0,
        tables=lambda out: [complex_pairs(out)],
        positions=fibo2_positions,
        dtype=torch.complex64,
    ),
    base=(4, 5),
    below=(((4, 5), (4, 5)), ((3, 5), (4, 5)), ((4, 2), (4, 5))),
    above=(8, 7),
    default_base=(64, 64),
    samplers=SAMPLERS,
    direct_call=lambda: (grid_ids(4, 4, IMAGE_PLANE),),
    cond=(10, 4),  # larger than the generated image on the row axis
)

ROWS = (BRIA_FIBO2,)
