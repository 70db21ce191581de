"""Cosmos 3 Omni (adapters/mechanisms/mrope.py, InterleavedMRope): interleaved MRoPE over a joint text + video
sequence, its inputs as Cosmos3OmniPipeline builds them (diffusers' own get_3d_mrope_ids_text_tokens /
get_3d_mrope_ids_vae_tokens, the text first, the video after the temporal modality margin, fps-modulated frames).

The reference of every pair DyPE moves is tests/reference_dype.py on the layout written from the module's formula:
pair j turns by theta^(-2j / D); pairs j = 3k + 1 (k < s_rows) take the row, j = 3k + 2 the column, so the row's
pairs are standard RoPE with base theta^(6n / D) on 2n channels at positions theta^(-2 / D) p (columns:
theta^(-4 / D) p), YaRN's base length the base grid times that factor. The pairs the reference leaves plain are
the upstream module's own numbers (it turns text and frame positions near 1.5e4 by float32 angles).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from reference_dype import axis_ratios, frequencies

from .grid import UNIPC_FLOW, _sampler
from .row import Family
from .tiny import tiny

# head 24: 12 pairs; sections (6, 3, 3): rows at pairs 1, 4, 7, columns at 2, 5, 8, frames / text at 0, 3, 6, 9-11
TINY_COSMOS3 = dict(
    head_dim=24, hidden_size=48, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1,
    num_key_value_heads=1, latent_channel=4, latent_patch_size=2, patch_latent_dim=16, vocab_size=32,
    rope_axes_dim=(6, 3, 3),
)
THETA, HALF, SECTIONS = 5000000.0, 12, (6, 3, 3)
TEXT = 5
FPS = 16.0  # Cosmos3OmniPipeline's frame rate argument, against the model's base_fps 24


def cosmos3_inputs(grid, batch=1, cond=None, seed=1):
    """Text-to-video: every latent frame noisy. The model packs one sample per call (batch 1)."""
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import (
        get_3d_mrope_ids_text_tokens, get_3d_mrope_ids_vae_tokens,
    )

    if batch != 1:
        raise ValueError("Cosmos 3 Omni packs one sample per call")
    g = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    text_ids, offset = get_3d_mrope_ids_text_tokens(TEXT, 0, use_float_positions=True)
    video_ids, _ = get_3d_mrope_ids_vae_tokens(
        frames, rows, cols, offset + 15000, reset_spatial_indices=True, fps=FPS, base_fps=24.0,
        temporal_compression_factor=4,
    )
    tokens = frames * rows * cols
    return dict(
        input_ids=torch.randint(0, 32, (TEXT,), generator=g),
        text_indexes=torch.arange(TEXT),
        position_ids=torch.cat([text_ids, video_ids.to(text_ids.dtype)], dim=1),
        und_len=TEXT,
        sequence_length=TEXT + tokens,
        vision_tokens=[torch.randn(1, 4, frames, 2 * rows, 2 * cols, generator=g)],
        vision_token_shapes=[(frames, rows, cols)],
        vision_sequence_indexes=torch.arange(TEXT, TEXT + tokens),
        vision_mse_loss_indexes=torch.arange(TEXT, TEXT + tokens),
        vision_noisy_frame_indexes=[torch.arange(frames)],
        return_dict=False,
    )


def stock_tables(position_ids):
    """The upstream module's (cos, sin) of position ids [3, N], called as the model calls it."""
    from diffusers.models.transformers.transformer_cosmos3 import Cosmos3VLTextRotaryEmbedding

    with torch.no_grad():
        return Cosmos3VLTextRotaryEmbedding(2 * HALF, THETA, SECTIONS)(
            position_ids=position_ids.unsqueeze(1), device=torch.device("cpu"), dtype=torch.float32
        )


def pairs(out) -> torch.Tensor:
    """(cos, sin) [B, N, D], pair j on channels j and j + D/2 -> [N, D/2, 2]."""
    cos, sin = (x.reshape(-1, x.shape[-1]) for x in out)
    assert torch.equal(cos[:, :HALF], cos[:, HALF:]) and torch.equal(sin[:, :HALF], sin[:, HALF:])
    return torch.stack([cos[:, :HALF], sin[:, :HALF]], -1).double()


@dataclass(frozen=True)
class MRopeLayout:
    tol: float = 2e-7  # float32 rounding of DyPE's float64 cos and sin
    dtype: torch.dtype = torch.float32

    def seen(self, calls):
        return [pairs(out) for _, out in calls]

    def expected(self, calls, grid, base, t, aspect, cond, **schedule):
        spans, base_lens = [1.0, *grid[-2:]], [1.0, *base]
        scales = axis_ratios(spans, base_lens, (1, 2), aspect, spatial=(1, 2))
        # the model calls its module by keyword, once, on the position ids the pipeline built (rebuilt here)
        position_ids = cosmos3_inputs(grid)["position_ids"]
        out = []
        for _ in calls:
            want = pairs(stock_tables(position_ids)).clone()
            ids = position_ids.double()  # [3, N]: every token's frame / text index, row, column
            for a in (1, 2):
                n, c = SECTIONS[a], THETA ** (-2 * a / (2 * HALF))
                base_theta = THETA ** (6 * n / (2 * HALF))
                omega, m = frequencies(2 * n, base_theta, base_lens[a] * c, scales[a], t, **schedule)
                plain, _ = frequencies(2 * n, base_theta, base_lens[a] * c, 1.0, t, **schedule)
                for k in range(n):
                    if omega[k] == plain[k] and m == 1.0:
                        continue  # plain: the stock number stays
                    angle = ids[a] * c * float(omega[k])
                    want[:, 3 * k + a, 0], want[:, 3 * k + a, 1] = angle.cos() * m, angle.sin() * m
            out.append(want)
        return out


@dataclasses.dataclass(frozen=True)
class NoisyTokenFamily(Family):
    """Cosmos3OmniPipeline's time: the step's timestep on every noisy vision token, `vision_timesteps` [tokens]."""

    def inputs_at(self, grid, timestep, batch=1, cond=None, seed=1):
        x = super().inputs_at(grid, timestep, batch, cond, seed)
        x[self.time_arg] = x[self.time_arg].reshape(1).expand(len(x["vision_mse_loss_indexes"])).clone()
        return x


COSMOS3 = NoisyTokenFamily(
    name="cosmos3_omni",
    adapter="cosmos3_omni",
    build=lambda seed=0, **o: tiny("Cosmos3OmniTransformer", TINY_COSMOS3, seed, **o),
    make_inputs=cosmos3_inputs,
    time_arg="vision_timesteps",
    pipeline_time=lambda ts: ts,  # the scheduler's timestep, 1000 = noise
    encoding="rotary_emb",
    layout=MRopeLayout(),
    base=(3, 4),
    below=(((2, 3, 4), (3, 4)), ((1, 2, 3), (3, 4))),
    above=(2, 6, 7),
    default_base=(23, 40),
    samplers=(_sampler("unipc-flow", "UniPCMultistepScheduler", UNIPC_FLOW),),
    direct_call=lambda: (torch.zeros(3, 1, 4), torch.device("cpu"), torch.float32),
    output=lambda out: out[0][0],
    lead=(2,),
)
