"""Tiny, seeded diffusers models built from configs (no weights are ever downloaded) and their inputs."""

from __future__ import annotations

import torch

TINY_FLUX = dict(
    patch_size=1,
    in_channels=4,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=(4, 6, 6),
)


def tiny_flux(seed: int = 0, **overrides):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(**{**TINY_FLUX, **overrides}).eval()


def flux_img_ids(h: int, w: int, frame: int = 0) -> torch.Tensor:
    ids = torch.zeros(h * w, 3)
    ids[:, 0] = frame
    ids[:, 1] = torch.arange(h).repeat_interleave(w)
    ids[:, 2] = torch.arange(w).repeat(h)
    return ids


def flux_inputs(h: int, w: int, t: float = 1.0, batch: int = 1, text_len: int = 5, seed: int = 1, model=None):
    cfg = model.config if model is not None else None
    in_ch = cfg.in_channels if cfg else TINY_FLUX["in_channels"]
    joint = cfg.joint_attention_dim if cfg else TINY_FLUX["joint_attention_dim"]
    pooled = cfg.pooled_projection_dim if cfg else TINY_FLUX["pooled_projection_dim"]
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, h * w, in_ch, generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, joint, generator=g),
        pooled_projections=torch.randn(batch, pooled, generator=g),
        timestep=torch.full((batch,), float(t)),
        img_ids=flux_img_ids(h, w),
        txt_ids=torch.zeros(text_len, 3),
    )
