"""NucleusMoE-Image, the Qwen-style shapes mechanism's row: a centred grid, text after the image's half-extent,
complex64 tables (image, text)."""

from __future__ import annotations

import torch

from .ids_flux_like import SAMPLERS
from .qwen_image import centred
from .row import Family, RopeLayout, complex_pairs
from .tiny import tiny

TEXT = 5
TINY_NUCLEUS = dict(
    patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=32, num_attention_heads=2,
    joint_attention_dim=16, axes_dims_rope=(8, 12, 12), moe_enabled=False,
)


def nucleus_inputs(grid, batch, cond, seed):
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, grid[0] * grid[1], TINY_NUCLEUS["in_channels"], generator=g),
        img_shapes=[(1, *grid)] * batch,  # NucleusMoEImagePipeline: one (1, rows, cols) per sample
        encoder_hidden_states=torch.randn(batch, TEXT, TINY_NUCLEUS["joint_attention_dim"], generator=g),
        encoder_hidden_states_mask=torch.ones(batch, TEXT, dtype=torch.long),
    )


def hand_positions(grid, cond, calls):
    """The image on frame 0 at centred (row, column); text on the diagonal after the image's half-extent."""
    h, w = grid
    image = [(0, r, c) for r in centred(h) for c in centred(w)]
    start = max(h // 2, w // 2)
    text = [(start + k,) * 3 for k in range(TEXT)]
    return [torch.tensor(image, dtype=torch.float64), torch.tensor(text, dtype=torch.float64)]


NUCLEUS = Family(
    name="nucleusmoe-image",
    adapter="nucleusmoe-image",
    build=lambda seed=0, **o: tiny("NucleusMoEImageTransformer2DModel", TINY_NUCLEUS, seed, **o),
    make_inputs=nucleus_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts / 1000,  # the pipeline passes timestep / num_train_timesteps
    encoding="pos_embed",
    layout=RopeLayout(
        axes=(8, 12, 12),
        theta=10000.0,
        tables=lambda out: [complex_pairs(table) for table in out],
        positions=hand_positions,
        dtype=torch.complex64,
    ),
    base=(4, 6),
    below=(((4, 6), (4, 6)), ((3, 5), (4, 6))),
    above=(9, 13),
    default_base=(64, 64),
    samplers=SAMPLERS,
    direct_call=lambda: ([(1, 4, 4)], torch.device("cpu"), 3),
)

ROWS = (NUCLEUS,)
