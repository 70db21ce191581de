"""AnyFlow and AnyFlow FAR (diffusers' transformer_anyflow.py, transformer_anyflow_far.py) on the grid mechanism: a
Wan 2.1 backbone whose RoPE module builds complex tables for the frames x rows x columns grid the model hands it as
`layout_cfg` (FAR: `far_cfg`, with compressed context frames in front).

AnyFlowRotaryPosEmbed splits the head as Wan does (rows and columns 2 * (D // 6) channels each, frames the rest),
takes float64 angles of arange positions from the precomputed table of rope_max_seq_len, and returns one complex
table [1, 1, L, D/2] as {"query": t, "key": t}. The model's latent is [B, F, C, H, W] (frames before channels)
and AnyFlowPipeline passes the flow-map timesteps per frame, [B, F] in 0 .. 1000 (scheduler sigma x 1000), with
conditioning frames at 0: the generated frames' time is the largest of the call (the grid mechanism's amax).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dype_rope.pipelines import keep_scheduler_shift

from ..mechanisms.grid import Grid, device_of, grid_positions
from ..mechanisms.grid_complex import ComplexQueryKey
from ..table import Family, Time, register_family

DIFFUSERS = "diffusers.models.transformers"


def anyflow_split(module: nn.Module) -> tuple[int, int, int]:
    """Channels of (frames, rows, columns), as AnyFlowRotaryPosEmbed._build_freqs splits the head."""
    d = module.attention_head_dim
    return d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)


def bound(names: tuple[str, ...], args: tuple, kwargs: dict) -> dict:
    """A call's arguments by name (the modules' forward signatures, in order)."""
    return dict(zip(names, args), **kwargs)


def layout_positions(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """arange positions of the layout's frames x rows x columns, frames-major, as the module lays out its tables."""
    call = bound(("layout_cfg", "device"), args, kwargs)
    cfg = call["layout_cfg"]
    return grid_positions((cfg["total_frames"], *cfg["full_frame_shape"]), call["device"])


def frames_first_tokens(model: nn.Module, module: nn.Module, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Tokens of a [B, F, C, H, W] latent as the forward counts them: every frame (total_frames = F) and the
    latent's height and width over the patch."""
    if len(shape) != 5:
        raise ValueError(f"AnyFlow's latent is [B, F, C, H, W], got a tensor of shape {tuple(shape)}")
    patch = model.config.patch_size
    return shape[1], shape[3] // patch[1], shape[4] // patch[2]


# AnyFlowPipeline's default 480 x 832 px (the Wan 2.1 T2V checkpoints' size), VAE 8 x patch 2 = 30 x 52 tokens.
register_family(
    Family(
        name="anyflow",
        classes=(f"{DIFFUSERS}.transformer_anyflow.AnyFlowTransformer3DModel",),
        module="rope",
        mechanism=Grid(
            stock=f"{DIFFUSERS}.transformer_anyflow.AnyFlowRotaryPosEmbed",
            axes_dims=anyflow_split,
            theta=lambda m: m.theta,
            positions=layout_positions,
            tokens=frames_first_tokens,
            probe=lambda m: ((), dict(
                layout_cfg={"total_frames": 3, "full_frame_shape": (4, 5)}, device=device_of(m),
            )),
            format=ComplexQueryKey(),
        ),
        base_grid=(30, 52),
        pixels_per_token=16,
        time=Time("timestep", divide_by=1000.0),
        rescaled_axes=(1, 2),
        temporal_axis=0,
        title="AnyFlow",
        note="Wan 2.1 backbone, complex RoPE tables; per-frame timesteps take the generated frames' (largest) time",
    )
)


# -- AnyFlow FAR: the causal variant, whose module also lays out the compressed context frames ---------------------


def centres(n: int, k: int, start: int = 0, device=None) -> Tensor:
    """Positions of n windows of k consecutive positions from `start`, each at its centre: the stock module's
    complex average pool of a window's e^(i p omega), renormalised, is e^(i centre omega) for every pair with
    k omega / 2 < pi (its largest omega is 1, so k < 2 pi); the probe checks the module's real compressed sizes."""
    return (torch.arange(n, device=device, dtype=torch.float32) + start) * k + (k - 1) / 2


def far_positions(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """The tokens of one call in the module's order: the compressed context frames (the first
    num_compressed_frames of the timeline, on the compressed grid, each token at the centre of the full-resolution
    window it pools), then the full-resolution frames after them; twice when clean_hidden_states is passed (the
    training rollout's clean copy of the full frames)."""
    call = bound(("far_cfg", "device", "clean_hidden_states"), args, kwargs)
    cfg, device = call["far_cfg"], call["device"]
    total, compressed = cfg["total_frames"], cfg["num_compressed_frames"]
    down = [c // p for c, p in zip(module.compressed_patch_size, module.patch_size)]
    sizes = (compressed, *cfg["compressed_frame_shape"])
    pooled = grid_positions(sizes, device, [centres(n, k, device=device) for n, k in zip(sizes, down)])
    full = grid_positions((total - compressed, *cfg["full_frame_shape"]), device, (
        torch.arange(compressed, total, device=device, dtype=torch.float32),
    ))
    clean = [full] if call.get("clean_hidden_states") is not None else []
    return torch.cat([pooled, full, *clean])


# AnyFlowFARPipeline's default 480 x 832 px, VAE 8 x patch 2 = 30 x 52 tokens, as AnyFlow's. Frames keep their
# RoPE: a call's latent holds one chunk while the module's frames run over the whole chunk_partition so far.
register_family(
    Family(
        name="anyflow_far",
        classes=(f"{DIFFUSERS}.transformer_anyflow_far.AnyFlowFARTransformer3DModel",),
        module="rope",
        mechanism=Grid(
            stock=f"{DIFFUSERS}.transformer_anyflow_far.AnyFlowCausalRotaryPosEmbed",
            axes_dims=anyflow_split,
            theta=lambda m: m.theta,
            positions=far_positions,
            tokens=frames_first_tokens,
            probe=lambda m: ((), dict(
                far_cfg={
                    "total_frames": 4, "num_compressed_frames": 2, "full_frame_shape": (4, 6),
                    "compressed_frame_shape": (3, 5),  # distinct sizes: a swapped axis shows
                },
                clean_hidden_states=torch.zeros(()),  # only its presence counts: the full frames come twice
                device=device_of(m),
            )),
            format=ComplexQueryKey(),
        ),
        base_grid=(30, 52),
        pixels_per_token=16,
        time=Time("timestep", divide_by=1000.0),
        rescaled_axes=(1, 2),
        title="AnyFlow FAR",
        note="causal chunks; its KV cache holds keys before RoPE and is written at timestep 0, so every step's "
        "tables apply to the cached context too",
    )
)

keep_scheduler_shift(
    # FlowMapEulerDiscreteScheduler: a fixed `shift` from its config, set_timesteps takes no mu.
    "diffusers.pipelines.anyflow.pipeline_anyflow.AnyFlowPipeline",
    "diffusers.pipelines.anyflow.pipeline_anyflow_far.AnyFlowFARPipeline",
)
