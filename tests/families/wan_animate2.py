"""Wan Animate 2 (adapters/families/by_method.py): a tiny WanAnimate2Transformer3DModel from a config, its denoising
call (`kv_cache_mode="cached"`) as WanAnimate2SegmentDenoiseInner makes it, and how its tables read.

The contract rows run the denoising call, where the model uses the timestep it is handed: the reference pass
("extract") is modulated at a fixed timestep of its own, which tests/test_family_wan_animate2.py checks apart. The
KV cache the denoising call reads holds keys before RoPE (the model rotates them again at every step), so it is
filled here with random keys and values of the reference's size instead of by a reference pass.

The denoising self-attention runs on flex attention with a BlockMask the model builds with
create_block_mask(_compile=True), which alone costs minutes on a CPU. The tiny model's `create_mask` runs with
_compile=False for the call (an instance attribute, taken away with the model): `_compile` says how the mask is
built, not which mask, so the model computes what it computes with the stock setting.
"""

from __future__ import annotations

import functools
from unittest import mock

import torch

from .grid import UNIPC_FLOW, _sampler
from .row import Family, RopeLayout, TablesArgument, complex_pairs
from .tiny import tiny

# head dim 18 split 6 / 6 / 6 (frames / rows / columns: d - 4 (d // 6), 2 (d // 6), 2 (d // 6)), 3 pairs per axis
TINY_WAN_ANIMATE2 = dict(
    patch_size=(1, 2, 2), text_len=8, in_dim=8, dim=36, ffn_dim=16, freq_dim=16, text_dim=16, out_dim=4,
    num_heads=2, num_layers=1, use_img_emb=False,
)
HEADS, HEAD_DIM, LATENT = 2, 18, 4  # the latent and the conditioning latents each have half of in_dim
TABLE_ROWS = 512  # _rope_freqs: rope_params(512, ...) on every axis
WARM_GRID = (2, 6, 8)  # the contract's grid beyond the base (3, 4): twice it, with the row's 2 frames


def eager_masks(model):
    """The model as given, its block masks built eagerly (see the module docstring)."""
    from diffusers.models.transformers import transformer_wan_animate_2 as wan
    from torch.nn.attention.flex_attention import create_block_mask

    stock = type(model).create_mask.__get__(model)

    def create_mask(*args, **kwargs):
        with mock.patch.object(wan, "create_block_mask", functools.partial(create_block_mask, _compile=False)):
            return stock(*args, **kwargs)

    model.create_mask = create_mask
    return model


def tiny_wan_animate2(seed: int = 0, **overrides):
    """Weights frozen: the pipeline samples under no_grad, and compiled flex attention has no backward on a CPU,
    which a call outside no_grad (the contract's stock compile) would otherwise ask for."""
    model = eager_masks(tiny("WanAnimate2Transformer3DModel", TINY_WAN_ANIMATE2, seed, **overrides).requires_grad_(False))
    warm(model, WARM_GRID)
    return model


def warm(model, grid) -> None:
    """One stock call at `grid`: the model fills its own caches at the first call at a size (a table per offset in
    rope_freqs_cache, a block mask per video size in block_masks), which under torch.compile are frames of their
    own; the contract's compile test counts the stock model's frames against the patched model's at that grid."""
    with torch.no_grad():
        model(**denoise_inputs(grid, layers=len(model.blocks)), timestep=torch.tensor([500.0]))


def kv_cache(batch: int, tokens: int, layers: int, generator) -> object:
    """A WanAnimate2KVCache holding, in every layer, keys and values as the reference pass stores them: projected,
    normed, before RoPE, (batch, tokens, heads, head dim)."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    cache = WanAnimate2KVCache(layers)
    for i in range(layers):
        k, v = (torch.randn(batch, tokens, HEADS, HEAD_DIM, generator=generator) for _ in range(2))
        cache.get(i).store(k, v)
    return cache


def denoise_inputs(grid, batch=1, cond=None, seed=1, layers=1):
    """WanAnimate2SegmentDenoiseInner's call. `grid` is the generated latent's (frames, rows, cols) in tokens: the
    segment's frames plus the reference image's slot; the driving-video reference has one frame fewer and, by
    default, the same rows and columns (`cond`: rows and columns of another size, which must not set the scale).
    origin_len / origin_area describe the segment in pixels (4 frames, 16 px per token), as the pipeline passes its
    segment_frame_length and height, width."""
    g = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    ref_rows, ref_cols = cond if cond is not None else (rows, cols)
    ref_frames = frames - 1
    latent = (LATENT, frames, 2 * rows, 2 * cols)
    return dict(
        hidden_states=[torch.randn(*latent, generator=g) for _ in range(batch)],
        encoder_hidden_states=[torch.randn(5, 16, generator=g) for _ in range(batch)],
        condition_latents=[torch.randn(*latent, generator=g) for _ in range(batch)],
        kv_cache=kv_cache(batch, ref_frames * ref_rows * ref_cols, layers, g),
        kv_cache_mode="cached",
        seq_len=frames * rows * cols,
        reference_grid_sizes=torch.tensor([[ref_frames, ref_rows, ref_cols]] * batch),  # rope_apply: a row per sample
        origin_len=(ref_frames - 1) * 4 + 1,
        origin_area=[16 * rows, 16 * cols],
        return_dict=False,
    )


def table_positions(offsets=(0, 0, 0)) -> torch.Tensor:
    """Row i of a `_rope_freqs` table: position i + offset on every axis, [512, 3], written from the model's
    rope_params(512, dim, offset=...) per axis."""
    i = torch.arange(TABLE_ROWS, dtype=torch.float64).unsqueeze(-1)
    return i + torch.tensor(offsets, dtype=torch.float64)


WAN_ANIMATE2 = Family(
    name="wan_animate2",
    adapter="wan_animate2",
    build=tiny_wan_animate2,
    make_inputs=denoise_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts,  # the pipeline stacks the scheduler's timestep (0 .. 1000)
    # the generated segment's table, as the first block receives it (the reference's arrives as
    # reference_rotary_emb, checked in tests/test_family_wan_animate2.py)
    encoding=TablesArgument("blocks", "rotary_emb"),
    layout=RopeLayout(
        axes=(6, 6, 6),
        theta=10000.0,
        tables=lambda out: [complex_pairs(out)],
        positions=lambda grid, cond, calls: [table_positions()],
        dtype=torch.complex128,
        tol=1e-12,  # both sides in float64
    ),
    base=(3, 4),
    below=(((2, 3, 4), (3, 4)), ((2, 2, 3), (3, 4)), ((3, 3, 4), (3, 3, 4))),  # last: frames rescaled too
    above=(2, 6, 7),
    default_base=(50, 40),
    samplers=(_sampler("unipc-flow", "UniPCMultistepScheduler", UNIPC_FLOW),),
    output=lambda out: out[0][0],
    cond=(5, 2),  # more rows than the base grid: a reference that set the scale breaks the bit-exact check
    lead=(2,),
    # the stock forward reads grid sizes to the host (.tolist(), .item()): it breaks its graph itself
    fullgraph=False,
)
