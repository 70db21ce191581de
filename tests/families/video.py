"""Video DiTs: Wan 2.1 / 2.2 and HunyuanVideo. Grids are (frames, rows, columns); frames keep plain RoPE unless
the base grid names a frame count."""

from __future__ import annotations

import torch

from .row import Family, Fused, RopeLayout, Sampler, interleaved, randomise_qk_norms
from .tiny import tiny

# head dim 18: Wan splits it 6 / 6 / 6 (frames / rows / columns), 3 pairs per axis.
TINY_WAN = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=18,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=16,
    ffn_dim=32,
    num_layers=1,
    rope_max_seq_len=64,
)
TINY_HUNYUAN_VIDEO = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    patch_size=1,
    patch_size_t=1,
    text_embed_dim=16,
    pooled_projection_dim=8,
    rope_axes_dim=(4, 6, 6),
)
# The schedulers the released pipelines ship (scheduler_config.json of Wan 2.1 and HunyuanVideo).
WAN_SCHEDULER = dict(
    num_train_timesteps=1000,
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    flow_shift=3.0,
    solver_order=2,
)
HUNYUAN_VIDEO_SCHEDULER = dict(num_train_timesteps=1000, shift=7.0)
# HunyuanVideo turns positions by float32 angles: |angle| <= 24 positions x 1 rad, rounded at 2**-24 relative.
ANGLE_TOL = 24 * 2.0**-23


def tiny_wan(seed: int = 0, **overrides):
    return randomise_qk_norms(tiny("WanTransformer3DModel", TINY_WAN, seed, **overrides))


def tiny_hunyuan_video(seed: int = 0, **overrides):
    return tiny("HunyuanVideoTransformer3DModel", TINY_HUNYUAN_VIDEO, seed, **overrides)


def wan_inputs(grid, batch=1, cond=None, seed=1):
    """Inputs for a latent whose token grid is frames x rows x cols (2 x 2 spatial patches)."""
    g = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    return dict(
        hidden_states=torch.randn(batch, TINY_WAN["in_channels"], frames, 2 * rows, 2 * cols, generator=g),
        encoder_hidden_states=torch.randn(batch, 5, TINY_WAN["text_dim"], generator=g),
        return_dict=False,
    )


def hunyuan_video_inputs(grid, batch=1, cond=None, seed=1):
    """Inputs for a latent whose token grid is frames x rows x cols (1 x 1 patches)."""
    g = torch.Generator().manual_seed(seed)
    cfg = TINY_HUNYUAN_VIDEO
    return dict(
        hidden_states=torch.randn(batch, cfg["in_channels"], *grid, generator=g),
        encoder_hidden_states=torch.randn(batch, 4, cfg["text_embed_dim"], generator=g),
        encoder_attention_mask=torch.ones(batch, 4, dtype=torch.long),
        pooled_projections=torch.randn(batch, cfg["pooled_projection_dim"], generator=g),
        guidance=torch.full((batch,), 6000.0),
        return_dict=False,
    )


def video_positions(frames: int, rows: int, cols: int) -> torch.Tensor:
    """(frame, row, column) of every token, frames-major as both models flatten their latents: [F*H*W, 3]."""
    f, h, w = torch.meshgrid(torch.arange(frames), torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([f, h, w], dim=-1).reshape(-1, 3).double()


def _wan_steps(steps: int = 50):
    """WanPipeline's default 50 UniPC steps; the pipeline passes the integer timesteps, so t = timestep / 1000
    (within 1e-3 of the scheduler's sigmas)."""
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler.from_config(WAN_SCHEDULER)
    scheduler.set_timesteps(steps)
    t = scheduler.timesteps.double() / 1000
    torch.testing.assert_close(t, scheduler.sigmas[:-1].double(), rtol=0, atol=1e-3)
    return scheduler.timesteps, t


def _hunyuan_steps(steps: int = 50):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(HUNYUAN_VIDEO_SCHEDULER)
    scheduler.set_timesteps(steps)  # HunyuanVideoPipeline's default
    return scheduler.timesteps, scheduler.sigmas[:-1]


def _wan_fused() -> Fused:
    from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor

    from dype_rope.adapters.wan_fused import FusedWanAttnProcessor, FusedWanRotaryPosEmbed

    class CustomProcessor(WanAttnProcessor):
        pass

    return Fused(
        attentions=(WanAttention,),
        processors={WanAttention: FusedWanAttnProcessor},
        encoding=FusedWanRotaryPosEmbed,
        unsupported=lambda model: (next(m for m in model.modules() if isinstance(m, WanAttention)), CustomProcessor()),
        grid=(2, 3, 4),  # 24 tokens
        batch=2,
    )


def _video_row(name: str, build, make_inputs, axes, theta, tol, default_base, sampler, **extra) -> Family:
    """Both video families lay tokens out frames-major, pass timesteps 0 .. 1000 and return (output,) tuples."""
    return Family(
        name=name,
        adapter=name,
        build=build,
        make_inputs=make_inputs,
        time_arg="timestep",
        pipeline_time=lambda ts: ts,
        encoding="rope",
        layout=RopeLayout(
            axes=axes,
            theta=theta,
            tables=lambda out: [interleaved(*out)],  # Wan [1, L, 1, D], HunyuanVideo [L, D]
            positions=lambda grid, cond, calls: [video_positions(*grid)],
            dtype=torch.float32,
            tol=tol,
        ),
        base=(3, 4),
        below=(((3, 3, 4), (3, 4)), ((2, 2, 3), (3, 4)), ((5, 3, 4), (5, 3, 4))),
        above=(2, 6, 7),
        default_base=default_base,
        samplers=(sampler,),
        output=lambda out: out[0],
        lead=(2,),
        **extra,
    )


WAN = _video_row(
    "wan", tiny_wan, lambda grid, batch, cond, seed: wan_inputs(grid, batch, cond, seed), (6, 6, 6), 10000.0, 2e-7,
    (30, 52),  # 480p
    Sampler("unipc-flow", _wan_steps),
    direct_call=lambda: (torch.zeros(1, TINY_WAN["in_channels"], 2, 4, 4),),
    cp_hooks=True,
    fused=_wan_fused(),
)
HUNYUAN_VIDEO = _video_row(
    "hunyuan_video", tiny_hunyuan_video,
    lambda grid, batch, cond, seed: hunyuan_video_inputs(grid, batch, cond, seed), (4, 6, 6), 256.0, ANGLE_TOL,
    (45, 80),  # 720p
    Sampler("flow-match-euler", _hunyuan_steps),
)
