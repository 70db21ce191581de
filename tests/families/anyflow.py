"""AnyFlow (adapters/families/by_anyflow.py): a tiny model from a config, inputs as AnyFlowPipeline builds them
(latent [B, F, C, H, W], flow-map timesteps t and r per frame), and its complex tables read pair by pair; the
reference is tests/reference_dype.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .row import Family, RopeLayout, Sampler, complex_pairs
from .tiny import tiny
from .video import video_positions

TEXT = 5
# head dim 18: AnyFlowRotaryPosEmbed splits it 6 / 6 / 6 (frames / rows / columns), 3 pairs per axis.
TINY_ANYFLOW = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=18, in_channels=4, out_channels=4, text_dim=16,
    freq_dim=16, ffn_dim=32, num_layers=1, rope_max_seq_len=64,
)
# FlowMapEulerDiscreteScheduler with a fixed shift; the pipeline passes its timesteps (sigma x 1000).
FLOW_MAP = dict(num_train_timesteps=1000, shift=3.0)


def flow_map_steps(steps: int = 16):
    """(timesteps, sigmas) of AnyFlow's scheduler: t = timestep / 1000 exactly (both float64)."""
    from diffusers import FlowMapEulerDiscreteScheduler

    scheduler = FlowMapEulerDiscreteScheduler(**FLOW_MAP)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps, scheduler.sigmas[:-1]


def anyflow_inputs(grid, batch=1, cond=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    return dict(
        hidden_states=torch.randn(batch, f, 4, 2 * h, 2 * w, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        return_dict=False,
    )


@dataclass(frozen=True)
class PerFrameFamily(Family):
    """AnyFlowPipeline's timesteps: t repeated over the latent's frames ([B, F]), with the conditioning frames
    (the first `context` ones) at 0, and the flow map's target time r (here half of t) likewise."""

    context: int = 0

    def inputs_at(self, grid, timestep: Tensor, batch: int = 1, cond=None, seed: int = 1) -> dict:
        x = self.make_inputs(grid, batch=batch, cond=cond, seed=seed)
        frames = x["hidden_states"].shape[1]
        t = torch.as_tensor(timestep, dtype=torch.float64).expand(batch).reshape(batch, 1).repeat(1, frames)
        r = 0.5 * t
        t[:, : self.context] = 0
        x.update(timestep=t, r_timestep=r)
        return x


def _row(name: str, context: int) -> PerFrameFamily:
    return PerFrameFamily(
        name=name,
        adapter="anyflow",
        build=lambda seed=0, **o: tiny("AnyFlowTransformer3DModel", TINY_ANYFLOW, seed, **o),
        make_inputs=anyflow_inputs,
        time_arg="timestep",
        pipeline_time=lambda ts: ts,
        encoding="rope",
        layout=RopeLayout(
            axes=(6, 6, 6),
            theta=10000.0,
            tables=lambda out: [complex_pairs(out["query"])],
            positions=lambda grid, cond, calls: [video_positions(*grid)],
            dtype=torch.complex128,
            tol=1e-12,  # float64 angles on both sides
        ),
        base=(3, 4),
        below=(((3, 3, 4), (3, 4)), ((2, 2, 3), (3, 4)), ((5, 3, 4), (5, 3, 4))),  # last: frames rescaled too
        above=(2, 6, 7),
        default_base=(30, 52),
        samplers=(Sampler("flow-map-euler", flow_map_steps),),
        output=lambda out: out[0],
        lead=(2,),
        context=context,
    )


ANYFLOW = _row("anyflow", context=0)
# video-to-video: the first latent frame is the conditioning video, at timestep 0
ANYFLOW_V2V = _row("anyflow_v2v", context=1)


# -- AnyFlow FAR ----------------------------------------------------------------------------------------------------

# Chunks of 1, 2, 2 latent frames with at most 2 at full resolution: the third chunk's step sees the first chunk
# compressed (compressed_patch_size 4 x 4 = 2 x 2 full-resolution tokens per token).
TINY_FAR = dict(TINY_ANYFLOW, compressed_patch_size=(1, 4, 4), full_chunk_limit=2, chunk_partition=(1, 2, 2))
FAR_CHUNKS = (1, 2, 2)
HEADS, HEAD_DIM = TINY_ANYFLOW["num_attention_heads"], TINY_ANYFLOW["attention_head_dim"]


def far_inputs(grid, batch=1, cond=None, seed=1):
    """A denoising step of the last chunk as AnyFlowFARPipeline runs it: the chunk's latent [B, F, C, H, W], the
    KV cache the earlier chunks' prefill wrote (keys before RoPE and values; random here), its flags."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    assert f == FAR_CHUNKS[-1]
    full, compressed = FAR_CHUNKS[1] * h * w, FAR_CHUNKS[0] * (h // 2) * (w // 2)
    cache = {0: {
        "full_cache": torch.randn(2, batch, HEADS, full, HEAD_DIM, generator=g),
        "compressed_cache": torch.randn(2, batch, HEADS, compressed, HEAD_DIM, generator=g),
    }}
    return dict(
        hidden_states=torch.randn(batch, f, 4, 2 * h, 2 * w, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        chunk_partition=list(FAR_CHUNKS),
        kv_cache=cache,
        kv_cache_flag={"num_cached_chunks": len(FAR_CHUNKS) - 1, "is_cache_step": False},
        return_dict=False,
    )


def far_positions(grid, cond, calls):
    """By hand: frame 0 compressed, its tokens at the centres (2 i + 1/2, 2 j + 1/2) of the 2 x 2 windows they
    pool, then frames 1 .. 4 at full resolution."""
    f, h, w = grid
    pooled = video_positions(1, h // 2, w // 2)
    pooled[:, 1:] = 2 * pooled[:, 1:] + 0.5
    full = video_positions(sum(FAR_CHUNKS) - 1, h, w)
    full[:, 0] += 1
    return [torch.cat([pooled, full])]


ANYFLOW_FAR = PerFrameFamily(
    name="anyflow_far",
    adapter="anyflow_far",
    build=lambda seed=0, **o: tiny("AnyFlowFARTransformer3DModel", TINY_FAR, seed, **o),
    make_inputs=far_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts,
    encoding="rope",
    layout=RopeLayout(
        axes=(6, 6, 6),
        theta=10000.0,
        tables=lambda out: [complex_pairs(out["key"])],  # the keys': the model cuts the queries to the chunk
        positions=far_positions,
        dtype=torch.complex128,
        tol=1e-12,
    ),
    base=(4, 6),
    below=(((2, 4, 6), (4, 6)), ((2, 2, 4), (4, 6))),
    above=(2, 8, 10),
    default_base=(30, 52),
    samplers=(Sampler("flow-map-euler", flow_map_steps),),
    output=lambda out: out[0],
    lead=(2,),
)
