"""Families handed their RoPE tables by the pipeline (adapters/mechanisms/passed.py). The tables each test feeds
the model are made by the pipeline's own function with the pipeline's own arguments, never by dype_rope."""

from __future__ import annotations

from dataclasses import dataclass

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


# -- Cosmos (adapters/mechanisms/axis_theta.py) -----------------------------------------------------------------

# Cosmos 2's structure (no learnable extra position embedding), tiny: head dim 24 splits 8 / 8 / 8; rope_scale
# differs on every axis so that a theta read off the wrong axis fails. max_size (latent pixels) leaves room for 4x
# the tests' base grid.
TINY_COSMOS = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=24,
    num_layers=1,
    mlp_ratio=2,
    text_embed_dim=8,
    adaln_lora_dim=4,
    max_size=(4, 64, 64),
    patch_size=(1, 2, 2),
    rope_scale=(2.0, 3.0, 4.0),
    concat_padding_mask=True,
    extra_pos_embed_type=None,
)


def cosmos_thetas(rope_scale=TINY_COSMOS["rope_scale"], dim=8) -> tuple[float, ...]:
    """Cosmos' NTK-scaled theta of every axis, written from its formula: 10000 * scale ** (d / (d - 2))."""
    return tuple(10000.0 * s ** (dim / (dim - 2)) for s in rope_scale)


def tiny_cosmos(seed: int = 0, **overrides):
    return tiny("CosmosTransformer3DModel", TINY_COSMOS, seed, **overrides)


def cosmos_inputs(grid, batch=1, cond=None, seed=1):
    """A latent [B, C, frames, H, W] of `grid` tokens (1 x 2 x 2 patches); the padding mask of zeros the
    pipelines pass at the pixel size (8 px per latent pixel)."""
    g = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    c = TINY_COSMOS
    return dict(
        hidden_states=torch.randn(batch, c["in_channels"], frames, 2 * rows, 2 * cols, generator=g),
        encoder_hidden_states=torch.randn(batch, 3, c["text_embed_dim"], generator=g),
        padding_mask=torch.zeros(1, 1, 16 * rows, 16 * cols),
        return_dict=False,
    )


def half_pairs(table_pair) -> list[torch.Tensor]:
    """(cos, sin) [L, D] with pair j at channels j and j + D/2 -> [L, D/2, 2]."""
    cos, sin = table_pair
    d = cos.shape[-1] // 2
    assert torch.equal(cos[:, :d], cos[:, d:]) and torch.equal(sin[:, :d], sin[:, d:])
    return [torch.stack([cos[:, :d], sin[:, :d]], -1).double()]


@dataclass(frozen=True)
class AxisThetaLayout(RopeLayout):
    """A RopeLayout whose axes each have their own theta: the reference of each axis block is the schedule with
    that axis' theta (Cosmos: DyPE on top of its NTK-scaled RoPE)."""

    thetas: tuple[float, ...] = ()

    def expected(self, calls, grid, base, t, aspect, cond, **schedule):
        blocks = []
        for a, theta in enumerate(self.thetas):
            one = RopeLayout(self.axes, theta, self.tables, self.positions, self.dtype, self.tol, self.rescaled)
            full = one.expected(calls, grid, base, t, aspect, cond, **schedule)
            start = sum(self.axes[:a]) // 2
            blocks.append([f[:, start : start + self.axes[a] // 2] for f in full])
        return [torch.cat(parts, dim=1) for parts in zip(*blocks)]


def _cosmos_steps(steps: int = 36):
    """Cosmos2_5_PredictBasePipeline's 36 steps of UniPCMultistepScheduler on flow sigmas, the model called with
    timestep = the step's sigma (the scheduler's default flow shift here; the shift only moves the sigmas)."""
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas[:-1].double()
    return sigmas * 1000, sigmas


COSMOS = Family(
    name="cosmos",
    adapter="cosmos",
    build=tiny_cosmos,
    make_inputs=cosmos_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts / 1000,  # a time in [0, 1], as Cosmos 2 / 2.5 pipelines pass it
    encoding="rope",
    layout=AxisThetaLayout(
        axes=(8, 8, 8),
        theta=0.0,  # unused: every axis has its own
        tables=half_pairs,
        positions=lambda grid, cond, calls: [video_positions(*grid)],
        dtype=torch.float32,
        # the stock module turns positions by float32 angles: |angle| <= 32 positions x 1 rad, at 2**-24 relative
        tol=32 * 2.0**-23,
        thetas=cosmos_thetas(),
    ),
    base=(3, 4),
    below=(((2, 3, 4), (3, 4)), ((1, 2, 3), (3, 4)), ((2, 5, 5), (5, 5))),
    above=(2, 6, 7),
    default_base=(44, 80),
    samplers=(Sampler("cosmos2.5-unipc-flow", _cosmos_steps),),
    direct_call=lambda: (torch.zeros(1, 4, 2, 4, 4),),
    output=lambda out: out[0],
    lead=(2,),
)
