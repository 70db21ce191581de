"""Families on the method mechanism (adapters/families/by_method.py): tiny JoyImage models from configs, their inputs
as JoyImageEditPipeline / JoyImageEditPlusPipeline build them, and how their tables read. The tables are read as the
first double block receives them (`image_rotary_emb`); positions are written by hand here, as each model lays out
its tokens; the reference is tests/reference_dype.py."""

from __future__ import annotations

import torch

from .grid import EULER_FLOW, _sampler
from .row import Family, RopeLayout, TablesArgument, interleaved
from .tiny import tiny
from .video import video_positions

TEXT = 5
# head dim 18 split 6 / 6 / 6 (frames / rows / columns): 3 pairs per axis, theta 256 (the models' default)
TINY_JOYIMAGE = dict(
    patch_size=[1, 2, 2], in_channels=4, hidden_size=36, num_attention_heads=2, text_dim=16, num_layers=1,
    rope_dim_list=[6, 6, 6],
)
JOYIMAGE_TABLES = TablesArgument("double_blocks", "image_rotary_emb")


def _noise(seed: int):
    return torch.Generator().manual_seed(seed)


def joyimage_inputs(grid, batch=1, cond=None, seed=1):
    """JoyImageEditPipeline: the latent [B, C, 1, H, W] (2 x 2 patches); editing, [B, 2, C, 1, H, W] with the
    reference image first and the generated image last, both of one size (the pipeline resizes the reference to
    the output's bucket), so `cond` only says a reference is there."""
    g = _noise(seed)
    rows, cols = grid
    shape = (batch, 4, 1, 2 * rows, 2 * cols) if cond is None else (batch, 2, 4, 1, 2 * rows, 2 * cols)
    return dict(
        hidden_states=torch.randn(*shape, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        return_dict=False,
    )


def joyimage_positions(grid, cond, calls):
    """The model moves the generated item first: it on frame 0, the reference on frame 1, rows and columns alike."""
    return [video_positions(1 if cond is None else 2, *grid)]


def joyimage_tables(out):
    vis, txt = out
    return [interleaved(*vis)] + ([] if txt is None else [interleaved(*txt)])


def plus_inputs(grid, batch=1, cond=None, seed=1):
    """JoyImageEditPlusPipeline.prepare_latents: every image patchified to [N, C, 1, 2, 2] patches, the generated
    image first, then the reference (any size), shape_list per sample in tokens."""
    g = _noise(seed)
    shapes = [(1, *grid)] + ([] if cond is None else [(1, *cond)])
    n = sum(t * h * w for t, h, w in shapes)
    return dict(
        hidden_states=torch.randn(batch, n, 4, 1, 2, 2, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        shape_list=[list(shapes) for _ in range(batch)],
        return_dict=False,
    )


def plus_positions(grid, cond, calls):
    """The generated image's grid on frame 0, the reference's on frame 1, its rows and columns from 0."""
    pos = [video_positions(1, *grid)]
    if cond is not None:
        ref = video_positions(1, *cond)
        ref[:, 0] += 1
        pos.append(ref)
    return [torch.cat(pos)]


def _row(name, cls, make_inputs, positions, cond, tables=lambda out: [interleaved(*out)]) -> Family:
    return Family(
        name=name,
        adapter=name,
        build=lambda seed=0, **o: tiny(cls, TINY_JOYIMAGE, seed, **o),
        make_inputs=make_inputs,
        time_arg="timestep",
        pipeline_time=lambda ts: ts,  # both pipelines pass the scheduler's timestep
        encoding=JOYIMAGE_TABLES,
        layout=RopeLayout(axes=(6, 6, 6), theta=256.0, tables=tables, positions=positions, dtype=torch.float32),
        base=(3, 4),
        below=(((3, 4), (3, 4)), ((2, 3), (3, 4))),
        above=(6, 7),
        default_base=(64, 64),
        # FlowMatchEulerDiscreteScheduler with a fixed shift, as both pipelines use it
        samplers=(_sampler("flow-match-euler", "FlowMatchEulerDiscreteScheduler", EULER_FLOW),),
        output=lambda out: out[0],
        cond=cond,
    )


JOYIMAGE_EDIT = _row(
    "joyimage-edit", "JoyImageEditTransformer3DModel", joyimage_inputs, joyimage_positions, (1, 1), joyimage_tables
)
JOYIMAGE_EDIT_PLUS = _row(
    "joyimage-edit-plus", "JoyImageEditPlusTransformer3DModel", plus_inputs, plus_positions, (5, 6)
)
