"""LTX-2 (adapters/mechanisms/ltx2.py, PixelMidpointCoordinates): LTX-Video's centred RoPE on pixel patch midpoints,
in both of the model's layouts ('interleaved' and per-head 'split').

The reference of every pair DyPE moves is tests/reference_dype.py on LTX-2's layout written from its formula: a
token of latent row r spans pixels [32 r, 32 r + 32), its midpoint u = (32 r + 16) / 2048 of the base size; pair k
of a spatial axis turns by (pi / 2) theta^(k / (n - 1)) (2u - 1), i.e. standard RoPE with theta theta^(n / (n - 1))
on 2n channels, pairs reversed, at positions p = (pi / 2) theta (2u - 1), YaRN's base length the base grid in
tokens times one token's step in p. Pairs the reference leaves plain must be the upstream diffusers module's own
numbers bit for bit (float32 angles up to ~1.6e4 rad, ~1e-3 from float64: no float64 formula can stand in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from reference_dype import axis_ratios, frequencies

from .ltx import LTX_SCHEDULER
from .row import Family, Sampler, flow_match
from .tiny import tiny

# LTX-2's structure, tiny: video inner dim 2 x 14 = 28 (4 pairs per axis, 2 padding pairs; in the split layout
# 7 angles per head, so the axes' pairs cross the heads' boundary), audio inner dim 2 x 4.
TINY_LTX2 = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=14,
    cross_attention_dim=28,  # the caption projection maps to the inner dim
    audio_in_channels=4,
    audio_out_channels=4,
    audio_num_attention_heads=2,
    audio_attention_head_dim=4,
    audio_cross_attention_dim=8,
    num_layers=1,
    caption_channels=8,
)
DIM = TINY_LTX2["num_attention_heads"] * TINY_LTX2["attention_head_dim"]
HEADS = TINY_LTX2["num_attention_heads"]
THETA, BASE_SIZE, PX = 10000.0, 2048.0, 32  # the model's rope_theta, base_height / base_width; VAE 32 x patch 1
FPS, AUDIO_FRAMES = 24.0, 5  # LTX2Pipeline's default frame_rate; a few audio latents


def tiny_ltx2(seed: int = 0, **overrides):
    return tiny("LTX2VideoTransformer3DModel", TINY_LTX2, seed, **overrides)


def stock_rope(rope_type: str = "interleaved"):
    """The upstream video RoPE module as the model builds it (its defaults: 20 s, 2048 px, VAE factors 8, 32, 32)."""
    from diffusers.models.transformers.transformer_ltx2 import LTX2AudioVideoRotaryPosEmbed

    return LTX2AudioVideoRotaryPosEmbed(dim=DIM, rope_type=rope_type, num_attention_heads=HEADS)


def video_coords(grid, batch: int = 1):
    """LTX2Pipeline's video_coords: the transformer rope's prepare_video_coords at its frame_rate."""
    frames, rows, cols = grid
    return stock_rope().prepare_video_coords(batch, frames, rows, cols, torch.device("cpu"), fps=FPS)


def ltx2_inputs(grid, batch=1, cond=None, seed=1):
    """LTX2Pipeline's call at `grid` (latent frames, rows, columns), every input but the time."""
    g = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    c = TINY_LTX2
    return dict(
        hidden_states=torch.randn(batch, frames * rows * cols, c["in_channels"], generator=g),
        audio_hidden_states=torch.randn(batch, AUDIO_FRAMES, c["audio_in_channels"], generator=g),
        encoder_hidden_states=torch.randn(batch, 3, c["caption_channels"], generator=g),
        audio_encoder_hidden_states=torch.randn(batch, 3, c["caption_channels"], generator=g),
        encoder_attention_mask=torch.ones(batch, 3),
        audio_encoder_attention_mask=torch.ones(batch, 3),
        num_frames=frames,
        height=rows,
        width=cols,
        fps=FPS,
        audio_num_frames=AUDIO_FRAMES,
        video_coords=video_coords(grid, batch),
        audio_coords=None,  # the model builds them (the pipeline's are the same: prepare_audio_coords)
        return_dict=False,
    )


def _ltx2_steps(steps: int = 50):
    """LTX2Pipeline's 50 steps: sigmas linspace(1, 1/steps), its resolution shift mu from the packed video's token
    count (here the tests' 2 x 6 x 8 grid; the pipeline's scheduler.config.get defaults are LTX-Video's config), the
    model called with the scheduler's timestep = sigma * 1000."""
    return flow_match(LTX_SCHEDULER, image_seq_len=2 * 6 * 8, steps=steps)


def pairs(out) -> torch.Tensor:
    """(cos, sin) of either layout -> [B * S, dim / 2, 2] in the module's angle order (pad + 3 k + a)."""
    cos, sin = out
    if cos.dim() == 4:  # split: [B, heads, S, dim / (2 heads)] -> [B, S, dim / 2]
        cos, sin = (x.transpose(1, 2).flatten(-2) for x in (cos, sin))
    else:  # interleaved: both channels of a pair equal
        assert torch.equal(cos[..., 0::2], cos[..., 1::2]) and torch.equal(sin[..., 0::2], sin[..., 1::2])
        cos, sin = cos[..., 0::2], sin[..., 0::2]
    return torch.stack([cos, sin], -1).reshape(-1, DIM // 2, 2).double()


@dataclass(frozen=True)
class Ltx2Layout:
    rope_type: str
    tol: float = 2e-7  # float32 rounding of DyPE's float64 cos and sin
    dtype: torch.dtype = torch.float32

    def seen(self, calls):
        return [pairs(out) for _, out in calls]

    def expected(self, calls, grid, base, t, aspect, cond, **schedule):
        n = DIM // 6
        pad = DIM // 2 - 3 * n
        # t as the model receives it: the pipeline passes sigma * 1000 in float32 (see tests/families/ltx.py)
        t = float((torch.tensor(t, dtype=torch.float32) * 1000).double() / 1000)
        theta_std = THETA ** (n / (n - 1))
        reach = (math.pi / 2) * THETA
        frames, rows, cols = grid
        scales = axis_ratios([1.0, rows, cols], [1.0, *base], (1, 2), aspect, spatial=(1, 2))
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        u = {1: (PX * r.reshape(-1).repeat(frames) + PX / 2) / BASE_SIZE,  # pixel midpoints over the base size
             2: (PX * c.reshape(-1).repeat(frames) + PX / 2) / BASE_SIZE}
        out = []
        for (coords,), _ in calls:
            want = pairs(stock_rope(self.rope_type)(coords)).clone()  # [B * S, dim / 2, 2]
            batch = coords.shape[0]
            for a in (1, 2):
                step = 2 * reach * PX / BASE_SIZE  # one token in p
                omega, m = frequencies(2 * n, theta_std, base[a - 1] * step, scales[a], t, **schedule)
                plain, _ = frequencies(2 * n, theta_std, base[a - 1] * step, 1.0, t, **schedule)
                p = (reach * (2 * u[a].double() - 1)).repeat(batch)
                for k in range(n):
                    j = n - 1 - k  # the standard form's pair
                    if omega[j] == plain[j] and m == 1.0:
                        continue  # plain: the stock number stays
                    angle = p * float(omega[j])
                    idx = pad + 3 * k + a
                    want[:, idx, 0], want[:, idx, 1] = angle.cos() * m, angle.sin() * m
            out.append(want)
        return out


def _row(name: str, rope_type: str, **extra) -> Family:
    return Family(
        name=name,
        adapter="ltx2",
        build=lambda seed=0, **overrides: tiny_ltx2(seed, **{"rope_type": rope_type, **overrides}),
        make_inputs=ltx2_inputs,
        time_arg="timestep",
        pipeline_time=lambda ts: ts,  # LTX2Pipeline passes the scheduler's timestep, sigma * 1000, as [B]
        encoding="rope",
        layout=Ltx2Layout(rope_type),
        base=(3, 4),
        below=(((2, 3, 4), (3, 4)), ((1, 2, 3), (3, 4)), ((2, 5, 5), (5, 5))),
        above=(2, 6, 7),
        default_base=(16, 24),
        samplers=(Sampler("ltx2-flow-euler", _ltx2_steps),),
        direct_call=lambda: (video_coords((2, 3, 4)),),
        # video and audio: the audio branch sees the video through the cross-attention, so it must stay stock too
        output=lambda out: torch.cat([out[0].flatten(), out[1].flatten()]),
        lead=(2,),
        **extra,
    )


# diffusers' _cp_plan splits the interleaved tables [B, S, dim] on dim 1
LTX2 = _row("ltx2", "interleaved", cp_hooks=True)
LTX2_SPLIT = _row("ltx2_split", "split")
