"""A tiny, seeded HiDreamImageTransformer2DModel built from a config (no weights are downloaded) and its inputs.

num_routed_experts=0 gives every block the dense feed-forward: diffusers' MoE inference path copies the expert
counts to the host (`bincount().cpu()`), which no compiled graph can contain, and the position encoding DyPE
replaces is the same either way.
"""

from __future__ import annotations

import torch

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


def tiny_hidream(seed: int = 0, **overrides):
    from diffusers import HiDreamImageTransformer2DModel

    torch.manual_seed(seed)
    return HiDreamImageTransformer2DModel(**{**TINY_HIDREAM, **overrides}).eval()


def hidream_inputs(h: int, w: int, timestep: float = 1000.0, batch: int = 1, text_len: int = 3, seed: int = 1):
    """Inputs for an h x w token grid (latent pixels 2h x 2w); timestep in 0..1000."""
    g = torch.Generator().manual_seed(seed)
    p = TINY_HIDREAM["patch_size"]
    t5, llama = TINY_HIDREAM["caption_channels"]
    n_llama = len(TINY_HIDREAM["llama_layers"])
    return dict(
        hidden_states=torch.randn(batch, TINY_HIDREAM["in_channels"], p * h, p * w, generator=g),
        timesteps=torch.full((batch,), float(timestep)),
        encoder_hidden_states_t5=torch.randn(batch, text_len, t5, generator=g),
        encoder_hidden_states_llama3=torch.randn(n_llama, batch, text_len, llama, generator=g),
        pooled_embeds=torch.randn(batch, TINY_HIDREAM["text_emb_dim"], generator=g),
    )
