"""A tiny, seeded Flux2Transformer2DModel built from a config (no weights are downloaded) and its inputs."""

from __future__ import annotations

import torch

TINY_FLUX2 = dict(
    patch_size=1,
    in_channels=4,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=32,
    num_attention_heads=2,
    joint_attention_dim=16,
    timestep_guidance_channels=32,
    axes_dims_rope=(8, 8, 8, 8),
)

# FLUX.2's scheduler config (FlowMatchEulerDiscreteScheduler); the pipeline passes its own mu.
FLUX2_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")


def tiny_flux2(seed: int = 0, **overrides):
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    return Flux2Transformer2DModel(**{**TINY_FLUX2, **overrides}).eval()


def flux2_ids(h: int, w: int, frame: int = 0) -> torch.Tensor:
    """Position ids (T, H, W, L) of an h x w latent image on time index `frame`, as the FLUX.2 pipeline lays them."""
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    return torch.stack([torch.full_like(rows, frame), rows, cols, torch.zeros_like(rows)], dim=-1)


def flux2_txt_ids(n: int) -> torch.Tensor:
    return torch.stack([torch.zeros(n, dtype=torch.long)] * 3 + [torch.arange(n)], dim=-1)


def flux2_inputs(h: int, w: int, t: float = 1.0, batch: int = 1, text_len: int = 5, seed: int = 1, cond=None):
    """Model inputs for an h x w image; `cond=(ch, cw)` appends a reference image on time index 10."""
    g = torch.Generator().manual_seed(seed)
    ids = flux2_ids(h, w)
    n_img = h * w
    if cond is not None:
        ids = torch.cat([ids, flux2_ids(*cond, frame=10)])
        n_img += cond[0] * cond[1]
    return dict(
        hidden_states=torch.randn(batch, n_img, TINY_FLUX2["in_channels"], generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, TINY_FLUX2["joint_attention_dim"], generator=g),
        timestep=torch.full((batch,), float(t)),
        img_ids=ids.unsqueeze(0).expand(batch, -1, -1),
        txt_ids=flux2_txt_ids(text_len).unsqueeze(0).expand(batch, -1, -1),
        guidance=torch.full((batch,), 4.0),
    )
