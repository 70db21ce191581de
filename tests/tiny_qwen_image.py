"""A tiny, seeded QwenImageTransformer2DModel built from a config (no weights are downloaded) and its inputs."""

from __future__ import annotations

import math

import torch

TINY_QWEN_IMAGE = dict(
    patch_size=2,
    in_channels=16,
    out_channels=4,
    num_layers=1,
    attention_head_dim=32,
    num_attention_heads=2,
    joint_attention_dim=16,
    axes_dims_rope=(8, 12, 12),
)

# Qwen-Image's scheduler config (FlowMatchEulerDiscreteScheduler): resolution shift with a terminal stretch.
QWEN_IMAGE_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=math.log(3),
    max_shift=math.log(3),
    base_image_seq_len=256,
    max_image_seq_len=8192,
    shift_terminal=0.02,
    time_shift_type="exponential",
)


def tiny_qwen_image(seed: int = 0, **overrides):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(**{**TINY_QWEN_IMAGE, **overrides}).eval()


def qwen_inputs(h: int, w: int, t: float = 1.0, batch: int = 1, text_len: int = 5, seed: int = 1, cond=None):
    """Model inputs for an h x w token image; `cond=(ch, cw)` adds a Qwen-Image-Edit conditioning image."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(1, h, w)] + ([(1, *cond)] if cond is not None else [])
    n_img = sum(f * a * b for f, a, b in shapes)
    return dict(
        hidden_states=torch.randn(batch, n_img, TINY_QWEN_IMAGE["in_channels"], generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, TINY_QWEN_IMAGE["joint_attention_dim"], generator=g),
        encoder_hidden_states_mask=torch.ones(batch, text_len, dtype=torch.long),
        timestep=torch.full((batch,), float(t)),
        img_shapes=[shapes] * batch,
    )
