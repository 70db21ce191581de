"""Families handed their RoPE tables by the pipeline (adapters/mechanisms/passed.py). The tables each test feeds
the model are made by the pipeline's own function with the pipeline's own arguments, never by dype_rope."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .row import Family, RopeLayout, Sampler, TablesArgument, interleaved
from reference_dype import axis_ratios, rope_pairs

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


# -- Allegro (adapters/mechanisms/passed.py, PassedAxisTables) ---------------------------------------------------

# Allegro's structure, tiny: head dim 18, a third (6 channels, 3 pairs) per axis; its interpolation scales kept.
TINY_ALLEGRO = dict(
    num_attention_heads=2,
    attention_head_dim=18,
    in_channels=4,
    out_channels=4,
    num_layers=1,
    cross_attention_dim=36,
    sample_height=8,
    sample_width=8,
    sample_frames=8,
    caption_channels=8,
    interpolation_scale_t=2.2,
    interpolation_scale_h=2.0,
    interpolation_scale_w=2.0,
)
ALLEGRO_SCALES = (2.2, 2.0, 2.0)


def tiny_allegro(seed: int = 0, **overrides):
    return tiny("AllegroTransformer3DModel", TINY_ALLEGRO, seed, **overrides)


def allegro_tables(grid, scales=ALLEGRO_SCALES, head_dim=TINY_ALLEGRO["attention_head_dim"]):
    """AllegroPipeline._prepare_rotary_positional_embeddings, step by step as the pipeline takes them."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    frames, rows, cols = grid
    freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=head_dim, crops_coords=((0, 0), (rows, cols)), grid_size=(rows, cols), temporal_size=frames,
        interpolation_scale=scales,
    )
    pos = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long())
    pos = pos.reshape(-1, 3).transpose(0, 1).reshape(3, 1, -1).contiguous()
    return (freqs_t, freqs_h, freqs_w), tuple(pos)


def allegro_inputs(grid, batch=1, cond=None, seed=1):
    """A latent [B, C, frames, H, W] of `grid` tokens (1 x 2 x 2 patches) and the pipeline's tables for it."""
    g = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    c = TINY_ALLEGRO
    return dict(
        hidden_states=torch.randn(batch, c["in_channels"], frames, 2 * rows, 2 * cols, generator=g),
        encoder_hidden_states=torch.randn(batch, 3, c["caption_channels"], generator=g),
        image_rotary_emb=allegro_tables(grid),
        return_dict=False,
    )


@dataclass(frozen=True)
class AxisTablesLayout:
    """Allegro's tables: per axis (cos, sin) [n_a, d_a] in halves at positions j / c_a. The reference of axis a is
    the schedule at those positions, its base length in the same units (base tokens / c_a); the scale is in tokens."""

    axes: tuple[int, ...]
    theta: float
    position_scales: tuple[float, ...]
    dtype: torch.dtype = torch.float32
    tol: float = 2e-7

    def seen(self, calls):
        return [pair for _, out in calls for table in out[0] for pair in half_pairs(table)]

    def expected(self, calls, grid, base, t, aspect, cond, **schedule):
        rescaled = (1, 2) if len(base) == 2 else (0, 1, 2)
        tokens, base_tokens = [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]
        for axis, n, b in zip(rescaled, grid[-len(base):], base):
            tokens[axis], base_tokens[axis] = n, b
        scales = axis_ratios(tokens, base_tokens, rescaled, aspect, spatial=(1, 2))
        base_lens = [b / c for b, c in zip(base_tokens, self.position_scales)]
        out = []
        for _ in calls:
            for a, (n, c) in enumerate(zip(grid, self.position_scales)):
                pos = torch.zeros(n, 3, dtype=torch.float64)
                pos[:, a] = (torch.arange(n, dtype=torch.float32) / c).double()  # the pipeline's float32 positions
                cos, sin = rope_pairs(pos, self.axes, self.theta, scales, t, base_lens, **schedule)
                start = sum(self.axes[:a]) // 2
                block = slice(start, start + self.axes[a] // 2)
                out.append(torch.stack([cos[:, block], sin[:, block]], -1))
        return out


def _allegro_steps(steps: int = 25):
    """25 steps (AllegroPipeline defaults to 100: the same range, fewer calls) of an Euler-ancestral DDPM schedule; the
    pipeline passes the scheduler's timestep,
    so t = timestep / 1000."""
    from diffusers import EulerAncestralDiscreteScheduler

    scheduler = EulerAncestralDiscreteScheduler()
    scheduler.set_timesteps(steps)
    return scheduler.timesteps, scheduler.timesteps.double() / 1000


ALLEGRO = Family(
    name="allegro",
    adapter="allegro",
    build=tiny_allegro,
    make_inputs=allegro_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts,
    encoding=TablesArgument("transformer_blocks", "image_rotary_emb"),
    layout=AxisTablesLayout(axes=(6, 6, 6), theta=10000.0, position_scales=ALLEGRO_SCALES),
    base=(3, 4),
    below=(((2, 3, 4), (3, 4)), ((1, 2, 3), (3, 4)), ((2, 5, 5), (5, 5))),
    above=(2, 6, 7),
    default_base=(45, 80),
    samplers=(Sampler("euler-ancestral", _allegro_steps),),
    output=lambda out: out[0],
    lead=(2,),
)
