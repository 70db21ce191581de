"""LTX-Video (adapters/mechanisms/ltx.py, CentredCoordinates): RoPE on centred, normalised coordinates.

The reference of every pair DyPE moves is tests/reference_dype.py on LTX-Video's layout written from its
formula: pair k of a spatial axis turns by (pi / 2) theta^(k / (n - 1)) (2u - 1), i.e. standard RoPE with theta
theta^(n / (n - 1)) on 2n channels, pairs reversed, at positions p = (pi / 2) theta (2u - 1), YaRN's base length
the base grid in tokens times one token's step in p. The pairs the reference leaves plain (its frequency and
mscale both the plain ones: frames always, and e.g. NTK's fastest pair) must be the upstream diffusers module's own
numbers, bit for bit: its float32 angles reach ~1.6e4 rad, ~1e-3 from float64, so no float64 formula can stand in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from reference_dype import axis_ratios, frequencies

from .row import Family, Sampler, flow_match, interleaved
from .tiny import tiny

# LTX-Video's structure, tiny: inner dim 2 x 14 = 28, so 4 pairs per axis and 28 % 6 = 4 padding channels.
TINY_LTX = dict(
    in_channels=4,
    out_channels=4,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=2,
    attention_head_dim=14,
    cross_attention_dim=28,  # the caption projection maps to the inner dim
    num_layers=1,
    caption_channels=8,
)
# LTXPipeline's rope_interpolation_scale at its default 25 fps: (VAE temporal ratio / fps, spatial, spatial).
SCALE = (8 / 25, 32, 32)
# Lightricks/LTX-Video's scheduler_config.json (FlowMatchEulerDiscreteScheduler).
LTX_SCHEDULER = dict(
    base_image_seq_len=1024,
    base_shift=0.95,
    max_image_seq_len=4096,
    max_shift=2.05,
    num_train_timesteps=1000,
    shift=1.0,
    shift_terminal=0.1,
    use_dynamic_shifting=True,
)
THETA, BASE_SIZE = 10000.0, 2048.0  # LTXVideoRotaryPosEmbed as the model builds it


def tiny_ltx(seed: int = 0, **overrides):
    return tiny("LTXVideoTransformer3DModel", TINY_LTX, seed, **overrides)


def ltx_inputs(grid, batch=1, cond=None, seed=1):
    """Latent tokens [B, F * H * W, C] of `grid` and LTXPipeline's grid arguments."""
    g = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    c = TINY_LTX
    return dict(
        hidden_states=torch.randn(batch, frames * rows * cols, c["in_channels"], generator=g),
        encoder_hidden_states=torch.randn(batch, 3, c["caption_channels"], generator=g),
        encoder_attention_mask=torch.ones(batch, 3),
        num_frames=frames,
        height=rows,
        width=cols,
        rope_interpolation_scale=SCALE,
        return_dict=False,
    )


def _ltx_steps(steps: int = 50):
    """LTXPipeline's 50 steps: sigmas linspace(1, 1/steps), its resolution shift mu from the video's token count
    (here the tests' 2 x 6 x 8 grid), the model called with the scheduler's timestep = sigma * 1000."""
    return flow_match(LTX_SCHEDULER, image_seq_len=2 * 6 * 8, steps=steps)


def stock_tables(args):
    """The upstream module's tables for one call's arguments."""
    from diffusers.models.transformers.transformer_ltx import LTXVideoRotaryPosEmbed

    dim = TINY_LTX["num_attention_heads"] * TINY_LTX["attention_head_dim"]
    with torch.no_grad():
        return LTXVideoRotaryPosEmbed(dim=dim)(*args)


@dataclass(frozen=True)
class LtxLayout:
    dim: int
    tol: float = 2e-7  # float32 rounding of DyPE's float64 cos and sin
    dtype: torch.dtype = torch.float32

    def seen(self, calls):
        return [interleaved(*out) for _, out in calls]

    def expected(self, calls, grid, base, t, aspect, cond, **schedule):
        n, pad = self.dim // 6, self.dim % 6
        # t as the model receives it: LTXPipeline passes the timestep sigma * 1000 in float32. Its rounding (~6e-8
        # in t) turns the fastest pairs (~1.6e4 rad) by ~1e-3 under a schedule in t, so the reference takes the
        # same t; the times the tests pick (1, 0.375, 0) are exact either way.
        t = float((torch.tensor(t, dtype=torch.float32) * 1000).double() / 1000)
        theta_std = THETA ** (n / (n - 1))
        spans, base_lens = [1.0, *grid[-2:]], [1.0, *base]
        scales = axis_ratios(spans, base_lens, (1, 2), aspect, spatial=(1, 2))
        out = []
        for args, _ in calls:
            want = interleaved(*stock_tables(args)).clone()  # [S, dim / 2, 2]
            frames, rows, cols = args[1:4]
            scale = args[4]
            # u of every token, frames-major: rows and columns step scale * patch / 2048 per token
            r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
            u = {1: r.reshape(-1).repeat(frames) * scale[1] / BASE_SIZE,
                 2: c.reshape(-1).repeat(frames) * scale[2] / BASE_SIZE}
            for a in (1, 2):
                step = 2 * (math.pi / 2) * THETA * scale[a] / BASE_SIZE  # one token in p
                omega, m = frequencies(2 * n, theta_std, base_lens[a] * step, scales[a], t, **schedule)
                plain, _ = frequencies(2 * n, theta_std, base_lens[a] * step, 1.0, t, **schedule)
                p = (math.pi / 2) * THETA * (2 * u[a].double() - 1)
                for k in range(n):
                    j = n - 1 - k  # the standard form's pair
                    if omega[j] == plain[j] and m == 1.0:
                        continue  # plain: the stock number stays
                    angle = p * float(omega[j])
                    idx = pad // 2 + 3 * k + a
                    want[:, idx, 0], want[:, idx, 1] = angle.cos() * m, angle.sin() * m
            out.append(want)
        return out


LTX_VIDEO = Family(
    name="ltx_video",
    adapter="ltx_video",
    build=tiny_ltx,
    make_inputs=ltx_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts,  # LTXPipeline passes the scheduler's timestep, sigma * 1000
    encoding="rope",
    layout=LtxLayout(dim=TINY_LTX["num_attention_heads"] * TINY_LTX["attention_head_dim"]),
    base=(3, 4),
    below=(((2, 3, 4), (3, 4)), ((1, 2, 3), (3, 4)), ((2, 5, 5), (5, 5))),
    above=(2, 6, 7),
    default_base=(16, 22),
    samplers=(Sampler("ltx-flow-euler", _ltx_steps),),
    direct_call=lambda: (torch.zeros(1, 24, 4), 2, 3, 4, SCALE, None),
    output=lambda out: out[0],
    lead=(2,),
)
