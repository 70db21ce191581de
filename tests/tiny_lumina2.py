"""A tiny, seeded Lumina2Transformer2DModel built from a config (no weights are downloaded) and its inputs."""

from __future__ import annotations

import torch

TINY_LUMINA2 = dict(
    sample_size=16,
    patch_size=2,
    in_channels=4,
    hidden_size=64,
    num_layers=1,
    num_refiner_layers=1,
    num_attention_heads=2,
    num_kv_heads=1,
    multiple_of=16,
    axes_dim_rope=(8, 12, 12),
    axes_lens=(64, 64, 64),
    cap_feat_dim=8,
)

# Lumina-Image-2.0's scheduler config (FlowMatchEulerDiscreteScheduler, fixed shift).
LUMINA2_SCHEDULER = dict(num_train_timesteps=1000, shift=6.0)


def tiny_lumina2(seed: int = 0, **overrides):
    from diffusers import Lumina2Transformer2DModel

    torch.manual_seed(seed)
    return Lumina2Transformer2DModel(**{**TINY_LUMINA2, **overrides}).eval()


def lumina2_inputs(h: int, w: int, t: float = 0.0, batch: int = 1, text_len: int = 5, seed: int = 1):
    """Model inputs for an h x w token image; `t` is Lumina2's own time (0 = noise, 1 = data)."""
    g = torch.Generator().manual_seed(seed)
    p = TINY_LUMINA2["patch_size"]
    return dict(
        hidden_states=torch.randn(batch, TINY_LUMINA2["in_channels"], h * p, w * p, generator=g),
        timestep=torch.full((batch,), float(t)),
        encoder_hidden_states=torch.randn(batch, text_len, TINY_LUMINA2["cap_feat_dim"], generator=g),
        encoder_attention_mask=torch.ones(batch, text_len, dtype=torch.bool),
    )
