"""Families handed their RoPE tables by the pipeline (adapters/mechanisms/passed.py). The tables each test feeds
the model are made by the pipeline's own function with the pipeline's own arguments, never by dype_rope."""

from __future__ import annotations

import torch

from .row import Family, RopeLayout, Sampler, TablesArgument, interleaved
from .tiny import tiny
from .video import video_positions

# CogVideoX 1.5's structure (patch_size_t set, RoPE on), tiny: head dim 16 splits 4 / 6 / 6 (frames / rows /
# columns) as get_3d_rotary_pos_embed does. sample_height / sample_width (latent pixels) cap the pipeline's
# position table at 16 tokens per side, room for 4x the tests' base grid.
TINY_COGVIDEOX = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=4,
    time_embed_dim=8,
    text_embed_dim=8,
    num_layers=1,
    sample_width=32,
    sample_height=32,
    sample_frames=9,
    patch_size=2,
    patch_size_t=2,
    temporal_compression_ratio=4,
    max_text_seq_length=4,
    use_rotary_positional_embeddings=True,
)
# CogVideoX1.5-5B's scheduler_config.json (CogVideoXDDIMScheduler, trailing timesteps, zero terminal SNR).
COGVIDEOX_SCHEDULER = dict(
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    clip_sample=False,
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    set_alpha_to_one=True,
    timestep_spacing="trailing",
)


def tiny_cogvideox(seed: int = 0, **overrides):
    return tiny("CogVideoXTransformer3DModel", TINY_COGVIDEOX, seed, **overrides)


def cogvideox_tables(grid, config=TINY_COGVIDEOX):
    """CogVideoXPipeline._prepare_rotary_positional_embeddings for CogVideoX 1.5 (patch_size_t set)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    frames, rows, cols = grid
    p = config["patch_size"]
    return get_3d_rotary_pos_embed(
        embed_dim=config["attention_head_dim"],
        crops_coords=None,
        grid_size=(rows, cols),
        temporal_size=frames,
        grid_type="slice",
        max_size=(config["sample_height"] // p, config["sample_width"] // p),
    )


def cogvideox_inputs(grid, batch=1, cond=None, seed=1):
    """A latent [B, frames, C, H, W] of `grid` tokens (2 x 2 x 2 patches) and the pipeline's tables for it."""
    g = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    c = TINY_COGVIDEOX
    return dict(
        hidden_states=torch.randn(batch, 2 * frames, c["in_channels"], 2 * rows, 2 * cols, generator=g),
        encoder_hidden_states=torch.randn(batch, c["max_text_seq_length"], c["text_embed_dim"], generator=g),
        image_rotary_emb=cogvideox_tables(grid),
        return_dict=False,
    )


def _cogvideox_steps(steps: int = 50):
    """CogVideoXPipeline's default 50 steps; it passes the scheduler's integer timestep, so t = timestep / 1000."""
    from diffusers import CogVideoXDDIMScheduler

    scheduler = CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps, scheduler.timesteps.double() / 1000


COGVIDEOX = Family(
    name="cogvideox",
    adapter="cogvideox",
    build=tiny_cogvideox,
    make_inputs=cogvideox_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts.long(),  # the DDIM scheduler's int64 timesteps, as the pipeline passes them
    encoding=TablesArgument("transformer_blocks", "image_rotary_emb"),
    layout=RopeLayout(
        axes=(4, 6, 6),
        theta=10000.0,
        tables=lambda out: [interleaved(*out)],
        positions=lambda grid, cond, calls: [video_positions(*grid)],
        dtype=torch.float32,
    ),
    base=(3, 4),
    below=(((2, 3, 4), (3, 4)), ((1, 2, 3), (3, 4)), ((2, 5, 5), (5, 5))),
    above=(2, 6, 7),
    default_base=(48, 85),
    samplers=(Sampler("cogvideox-ddim", _cogvideox_steps),),
    output=lambda out: out[0],
    lead=(2,),
)
