"""Z-Image: a plain-object rope embedder (not an nn.Module), theta 256, complex64 tables from float64 angles, time
running the other way (0 = noise)."""

from __future__ import annotations

import torch

from .row import Family, RopeLayout, Sampler, complex_pairs, flow_match
from .tiny import tiny

TINY_ZIMAGE = dict(
    all_patch_size=(2,),
    all_f_patch_size=(1,),
    in_channels=4,
    dim=64,
    n_layers=1,
    n_refiner_layers=1,
    n_heads=2,
    n_kv_heads=2,
    cap_feat_dim=16,
    rope_theta=256.0,
    axes_dims=[8, 12, 12],
    axes_lens=[128, 64, 64],
)
# Z-Image's scheduler config (FlowMatchEulerDiscreteScheduler, fixed shift).
ZIMAGE_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)


def tiny_zimage(seed: int = 0, **overrides):
    return tiny("ZImageTransformer2DModel", TINY_ZIMAGE, seed, **overrides)


def zimage_inputs(grid, batch=1, cond=None, seed=1, text_len=5):
    g = torch.Generator().manual_seed(seed)
    p = TINY_ZIMAGE["all_patch_size"][0]
    h, w = grid
    return dict(
        x=[torch.randn(TINY_ZIMAGE["in_channels"], 1, h * p, w * p, generator=g) for _ in range(batch)],
        cap_feats=[torch.randn(text_len, TINY_ZIMAGE["cap_feat_dim"], generator=g) for _ in range(batch)],
    )


def zimage_omni_inputs(h: int, w: int, cond: tuple[int, int], t: float = 0.0, seed: int = 1):
    """Omni-mode inputs (model built with siglip_feat_dim=8): a conditioning latent of cond tokens, then the
    h x w latent being generated, one caption each, SigLIP features for the conditioning image."""
    g = torch.Generator().manual_seed(seed)
    p, c = TINY_ZIMAGE["all_patch_size"][0], TINY_ZIMAGE["in_channels"]
    return dict(
        x=[[torch.randn(c, 1, cond[0] * p, cond[1] * p, generator=g), torch.randn(c, 1, h * p, w * p, generator=g)]],
        t=torch.tensor([float(t)]),
        cap_feats=[[torch.randn(5, TINY_ZIMAGE["cap_feat_dim"], generator=g)] * 2],
        siglip_feats=[[torch.randn(2, 2, 8, generator=g), None]],
        image_noise_mask=[[0, 1]],
    )


def model_ids(grid, cond, calls) -> list[torch.Tensor]:
    """The ids Z-Image computes itself (image, then captions); the image's must span the grid exactly."""
    image = calls[0][0]
    assert (image[:, 1].amax().item(), image[:, 2].amax().item()) == (grid[0] - 1, grid[1] - 1)
    return [args[0].double() for args in calls]


ZIMAGE = Family(
    name="z-image",
    adapter="z-image",
    build=tiny_zimage,
    make_inputs=lambda grid, batch, cond, seed: zimage_inputs(grid, batch, cond, seed),
    time_arg="t",
    pipeline_time=lambda ts: (1000 - ts) / 1000,  # the pipeline passes (1000 - t) / 1000
    encoding="rope_embedder",
    layout=RopeLayout(
        axes=(8, 12, 12),
        theta=256.0,
        tables=lambda out: [complex_pairs(out)],
        positions=model_ids,
        dtype=torch.complex64,
        tol=2e-6,
    ),
    base=(4, 6),
    below=(((4, 6), (4, 6)), ((3, 2), (4, 6))),
    above=(8, 9),
    default_base=(64, 64),
    samplers=(Sampler("z-image", lambda: flow_match(ZIMAGE_SCHEDULER, 4096)),),
    output=lambda out: torch.stack(out.sample),
)
