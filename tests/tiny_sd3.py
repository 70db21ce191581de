"""A tiny, seeded SD3Transformer2DModel built from a config (no weights are downloaded) and its inputs.

pos_embed_max_size is small (12 tokens) so that a forward at 4x the base grid (8 -> 32 tokens per side) runs past
the stored grid, where the stock model raises.
"""

from __future__ import annotations

import torch

TINY_SD3 = dict(
    sample_size=8,  # base grid 8 x 8 tokens at patch size 1
    patch_size=1,
    in_channels=4,
    num_layers=1,
    attention_head_dim=8,
    num_attention_heads=2,
    joint_attention_dim=16,
    caption_projection_dim=16,
    pooled_projection_dim=8,
    out_channels=4,
    pos_embed_max_size=12,
)


def tiny_sd3(seed: int = 0, **overrides):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(**{**TINY_SD3, **overrides}).eval()


def sd3_inputs(h: int, w: int, timestep: float = 1000.0, batch: int = 1, text_len: int = 5, seed: int = 1):
    """Inputs for an h x w token grid (patch size 1: latent pixels = tokens); timestep in 0..1000."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, TINY_SD3["in_channels"], h, w, generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, TINY_SD3["joint_attention_dim"], generator=g),
        pooled_projections=torch.randn(batch, TINY_SD3["pooled_projection_dim"], generator=g),
        timestep=torch.full((batch,), float(timestep)),
    )
