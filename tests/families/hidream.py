"""HiDream-I1: rotation matrices on ids the model computes itself, time as timesteps / 1000.

num_routed_experts=0 gives every block the dense feed-forward: diffusers' MoE inference path copies the expert
counts to the host (`bincount().cpu()`), which no compiled graph can contain, and the position encoding DyPE
replaces is the same either way.
"""

from __future__ import annotations

import torch

from .row import Family, RopeLayout, Sampler, matrix_pairs
from .tiny import tiny

TINY_HIDREAM = dict(
    patch_size=2,
    in_channels=4,
    out_channels=4,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    caption_channels=[8, 4],  # (T5, Llama)
    text_emb_dim=8,
    num_routed_experts=0,
    num_activated_experts=0,
    axes_dims_rope=(4, 6, 6),
    max_resolution=(16, 16),  # latent pixels: an 8 x 8 token base grid at patch size 2
    llama_layers=(0, 1),
)
BASE = TINY_HIDREAM["max_resolution"][0] // TINY_HIDREAM["patch_size"]  # 8 tokens


def tiny_hidream(seed: int = 0, **overrides):
    return tiny("HiDreamImageTransformer2DModel", TINY_HIDREAM, seed, **overrides)


def hidream_inputs(grid, batch=1, cond=None, seed=1, text_len=3):
    """Inputs for a grid of tokens (latent pixels 2h x 2w)."""
    g = torch.Generator().manual_seed(seed)
    p = TINY_HIDREAM["patch_size"]
    t5, llama = TINY_HIDREAM["caption_channels"]
    n_llama = len(TINY_HIDREAM["llama_layers"])
    h, w = grid
    return dict(
        hidden_states=torch.randn(batch, TINY_HIDREAM["in_channels"], p * h, p * w, generator=g),
        encoder_hidden_states_t5=torch.randn(batch, text_len, t5, generator=g),
        encoder_hidden_states_llama3=torch.randn(n_llama, batch, text_len, llama, generator=g),
        pooled_embeds=torch.randn(batch, TINY_HIDREAM["text_emb_dim"], generator=g),
    )


def _schedulers():
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
    from diffusers.pipelines.hidream_image.pipeline_hidream_image import calculate_shift

    euler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    euler.set_timesteps(28, mu=calculate_shift(64 * 64))  # the pipeline's mu for a max_seq of 4096 tokens
    unipc = UniPCMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction")
    unipc.set_timesteps(28)
    return {"flow-match-euler": euler, "unipc-flow": unipc}


def _steps(name):
    scheduler = _schedulers()[name]
    return scheduler.timesteps, scheduler.timesteps.double() / 1000


HIDREAM = Family(
    name="hidream",
    adapter="hidream",
    build=tiny_hidream,
    make_inputs=lambda grid, batch, cond, seed: hidream_inputs(grid, batch, cond, seed),
    time_arg="timesteps",
    pipeline_time=lambda ts: ts,  # 0 .. 1000
    encoding="pe_embedder",
    layout=RopeLayout(
        axes=(4, 6, 6),
        theta=10000.0,
        tables=lambda out: [matrix_pairs(out[0])],
        positions=lambda grid, cond, calls: [args[0][0].double() for args in calls],  # the model's own ids
        dtype=torch.float32,
        tol=1e-6,
    ),
    base=(8, 4),
    below=(((8, 8), (8, 8)), ((6, 8), (8, 8)), ((4, 4), (8, 8)), ((8, 4), (8, 4))),
    above=(16, 16),  # non-square grids beyond max_resolution do not fit HiDream's padding
    default_base=(BASE, BASE),
    samplers=tuple(Sampler(name, lambda name=name: _steps(name)) for name in ("flow-match-euler", "unipc-flow")),
    beyond=(16, 16),
    four_x=(32, 32),
    direct_call=lambda: (torch.zeros(1, 4, 3),),
)
