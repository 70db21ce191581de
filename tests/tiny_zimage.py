"""A tiny, seeded ZImageTransformer2DModel built from a config (no weights are downloaded) and its inputs."""

from __future__ import annotations

import torch

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
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(seed)
    return ZImageTransformer2DModel(**{**TINY_ZIMAGE, **overrides}).eval()


def zimage_inputs(h: int, w: int, t: float = 0.0, batch: int = 1, text_len: int = 5, seed: int = 1):
    """Model inputs for an h x w token image; `t` is Z-Image's own time (0 = noise, 1 = data)."""
    g = torch.Generator().manual_seed(seed)
    p = TINY_ZIMAGE["all_patch_size"][0]
    return dict(
        x=[torch.randn(TINY_ZIMAGE["in_channels"], 1, h * p, w * p, generator=g) for _ in range(batch)],
        t=torch.full((batch,), float(t)),
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
