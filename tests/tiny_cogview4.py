"""A tiny, seeded CogView4Transformer2DModel built from a config (no weights are downloaded) and its inputs.

The real model's proportions are kept where DyPE reads them: rope_axes_dim / base grid = 4 positions per token
at the base grid (256 / 64 for CogView4-6B, 32 / 8 here).
"""

from __future__ import annotations

import torch

TINY_COGVIEW4 = dict(
    patch_size=2,
    in_channels=4,
    out_channels=4,
    num_layers=1,
    attention_head_dim=16,  # 8 channels, 4 rotation pairs per axis
    num_attention_heads=2,
    text_embed_dim=8,
    time_embed_dim=8,
    condition_dim=4,
    sample_size=16,  # latent pixels: an 8 x 8 token base grid
    rope_axes_dim=(32, 32),
)


def tiny_cogview4(seed: int = 0, **overrides):
    from diffusers import CogView4Transformer2DModel

    torch.manual_seed(seed)
    return CogView4Transformer2DModel(**{**TINY_COGVIEW4, **overrides}).eval()


def cogview4_inputs(h: int, w: int, timestep: float = 1000.0, batch: int = 1, text_len: int = 4, seed: int = 1):
    """Inputs for an h x w token grid (latent pixels 2h x 2w); timestep in 0..1000."""
    g = torch.Generator().manual_seed(seed)
    p = TINY_COGVIEW4["patch_size"]
    px = torch.tensor([[16.0 * h, 16.0 * w]]).repeat(batch, 1)
    return dict(
        hidden_states=torch.randn(batch, TINY_COGVIEW4["in_channels"], p * h, p * w, generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, TINY_COGVIEW4["text_embed_dim"], generator=g),
        timestep=torch.full((batch,), float(timestep)),
        original_size=px,
        target_size=px,
        crop_coords=torch.zeros(batch, 2),
    )
