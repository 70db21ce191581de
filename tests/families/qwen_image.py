"""Qwen-Image (and Qwen-Image-Edit's conditioning images): centred positions, text after the image's
half-extent, complex64 tables."""

from __future__ import annotations

import math

import torch

from .row import Family, Fused, RopeLayout, Sampler, complex_pairs, flow_match, randomise_qk_norms
from .tiny import tiny

TEXT = 5

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
    return randomise_qk_norms(tiny("QwenImageTransformer2DModel", TINY_QWEN_IMAGE, seed, **overrides))


def image_shapes(grid, cond) -> list[tuple[int, int, int]]:
    return [(1, *grid)] + ([(1, *cond)] if cond is not None else [])


def qwen_inputs(grid, batch=1, cond=None, seed=1, text_len=TEXT):
    """Model inputs for a grid of tokens; `cond` adds a Qwen-Image-Edit conditioning image."""
    g = torch.Generator().manual_seed(seed)
    shapes = image_shapes(grid, cond)
    n_img = sum(f * a * b for f, a, b in shapes)
    return dict(
        hidden_states=torch.randn(batch, n_img, TINY_QWEN_IMAGE["in_channels"], generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, TINY_QWEN_IMAGE["joint_attention_dim"], generator=g),
        encoder_hidden_states_mask=torch.ones(batch, text_len, dtype=torch.long),
        img_shapes=[shapes] * batch,
    )


def centred(n: int) -> list[int]:
    """Qwen-Image's centred positions, written out: n = 5 -> -3, -2, -1, 0, 1; n = 4 -> -2, -1, 0, 1."""
    return list(range(-(n - n // 2), n // 2))


def hand_positions(grid, cond, text_len=TEXT) -> list[torch.Tensor]:
    """Image k on frame k at centred (row, column); text tokens on the diagonal after the largest half-extent."""
    shapes = image_shapes(grid, cond)
    image = [(i, r, c) for i, (_, h, w) in enumerate(shapes) for r in centred(h) for c in centred(w)]
    start = max(max(h // 2, w // 2) for _, h, w in shapes)
    text = [(start + k,) * 3 for k in range(text_len)]
    return [torch.tensor(image, dtype=torch.float64), torch.tensor(text, dtype=torch.float64)]


def _fused() -> Fused:
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from dype_rope.adapters.qwen_image_fused import FusedQwenDoubleStreamAttnProcessor, FusedQwenEmbedRope

    return Fused(
        attentions=(Attention,),
        processors={Attention: FusedQwenDoubleStreamAttnProcessor},
        encoding=FusedQwenEmbedRope,
        unsupported=lambda model: (next(m for m in model.modules() if isinstance(m, Attention)), AttnProcessor2_0()),
        # a Qwen-Image-Edit conditioning image: its tokens sit on frame 1 with their own centred positions
        cond=(2, 3),
    )


QWEN_IMAGE = Family(
    name="qwen-image",
    adapter="qwen-image",
    build=tiny_qwen_image,
    make_inputs=lambda grid, batch, cond, seed: qwen_inputs(grid, batch, cond, seed),
    time_arg="timestep",
    pipeline_time=lambda ts: ts / 1000,
    encoding="pos_embed",
    layout=RopeLayout(
        axes=(8, 12, 12),
        theta=10000.0,
        tables=lambda out: [complex_pairs(table) for table in out],  # (image, text)
        positions=lambda grid, cond, calls: hand_positions(grid, cond),
        dtype=torch.complex64,
        tol=1e-5,  # Qwen-Image's own angles are float32: rounding of angles up to ~30 rad
    ),
    base=(4, 6),
    below=(((4, 6), (4, 6)), ((3, 5), (4, 6))),
    above=(9, 13),
    default_base=(83, 83),  # 1328 px
    samplers=(Sampler("qwen-image", lambda: flow_match(QWEN_IMAGE_SCHEDULER, 6889)),),  # 1328 px
    cond=(11, 5),  # larger than the generated image on the row axis
    none_is_stock=False,  # the stock encoding caches float32 angles; DyPE computes them in float64
    cp_hooks=True,
    fused=_fused(),
)
