"""Family rows over the method mechanism (adapters/mechanisms/method.py): models whose RoPE tables come from a
method of the model itself rather than a RoPE submodule."""

from __future__ import annotations

import torch

from dype_rope.pipelines import keep_scheduler_shift

from ..mechanisms.grid import grid_positions
from ..mechanisms.grid_complex import Complex
from ..mechanisms.method import Method
from ..mechanisms.method_own_time import OwnTime
from ..table import Family, Time, register_family

T = "diffusers.models.transformers."


def _head_dim(hidden_size: int, heads: int) -> int:
    return int(hidden_size) // int(heads)


def _joyimage_dims(model) -> list[int]:
    """JoyImage-Edit's (frames, rows, cols) channels: rope_dim_list, or the head dim in thirds where it is None."""
    dims = model.rope_dim_list
    return list(dims) if dims is not None else [_head_dim(model.hidden_size, model.num_attention_heads) // 3] * 3


def _joyimage_positions(args) -> tuple:
    """get_rotary_pos_embed(vis_rope_size, txt_rope_size): the (frames, rows, cols) grid from 0, frames-major (sizes
    of fewer than 3 axes padded with leading 1s); with txt_rope_size (rope_type "mrope") the text after the grid's
    largest index on every axis."""
    sizes = [int(s) for s in args["vis_rope_size"]]
    sizes = [1] * (3 - len(sizes)) + sizes
    vis = grid_positions(sizes)
    txt = args["txt_rope_size"]
    if txt is None:
        return vis, None
    start = max(sizes) - 1 + 1
    return vis, (torch.arange(int(txt), dtype=torch.float32) + start).unsqueeze(-1).expand(-1, 3)


def _joyimage_tokens(model, hidden_states) -> tuple[int, int, int]:
    """(frames of one item, rows, cols) of the latent [B, C, T, H, W] or multi-item [B, N, C, T, H, W]: every item
    (the generated image and the reference) has the same rows and columns."""
    *_, t, h, w = hidden_states.shape
    pt, ph, pw = model.patch_size
    return t // pt, h // ph, w // pw


def _joyimage_probe(model) -> dict:
    return dict(vis_rope_size=[2, 3, 4], txt_rope_size=5 if model.rope_type == "mrope" else None)


def _plus_dims(model) -> list[int]:
    c = model.config
    dims = c.rope_dim_list
    return list(dims) if dims is not None else [_head_dim(c.hidden_size, c.num_attention_heads) // 3] * 3


def _plus_positions(args) -> tuple:
    """_get_rotary_pos_embed_for_range(start, stop): the grid of [start, stop) on each of (frames, rows, cols)."""
    start, stop = args["start"], args["stop"]
    axes = [torch.arange(int(a), int(b), dtype=torch.float32) for a, b in zip(start, stop)]
    return (grid_positions([len(a) for a in axes], axes=axes),)


ROWS = (
    Family(
        name="joyimage-edit",
        classes=(T + "transformer_joyimage.JoyImageEditTransformer3DModel",),
        module="get_rotary_pos_embed",
        # (frames, rows, cols) from 0 for every token of the latent; a reference image is an earlier item, put on
        # later frames by the model (it moves the generated item first), with the same rows and columns
        mechanism=Method(
            method="get_rotary_pos_embed",
            axes_dims=_joyimage_dims,
            theta=lambda model: model.theta,
            positions=_joyimage_positions,
            inputs=("hidden_states",),
            tokens=_joyimage_tokens,
            probe=_joyimage_probe,
            parts=2,  # (image tables, text tables or None)
        ),
        # JoyImageEditPipeline snaps every size to the buckets of JoyImageEditImageProcessor's basesize 1024;
        # Wan 2.1 VAE (8 px) x 2 x 2 patches
        base_grid=(64, 64),
        time=Time("timestep", divide_by=1000.0),  # the pipeline passes the scheduler's timestep (0 .. 1000)
        title="JoyImage Edit",
        note="get_rotary_pos_embed, (cos, sin) interleaved",
    ),
    Family(
        name="joyimage-edit-plus",
        classes=(T + "transformer_joyimage_edit_plus.JoyImageEditPlusTransformer3DModel",),
        module="_get_rotary_pos_embed_for_range",
        # called once per image of each sample: the generated image first (shape_list[i][0]), then the references,
        # frames continuing, rows and columns from 0
        mechanism=Method(
            method="_get_rotary_pos_embed_for_range",
            axes_dims=_plus_dims,
            theta=lambda model: model.config.theta,
            positions=_plus_positions,
            inputs=("shape_list",),
            tokens=lambda model, shape_list: shape_list[0][0],  # the first sample's generated image, in tokens
            probe=lambda model: dict(start=(1, 0, 0), stop=(3, 3, 4)),
            # the forward loops over the samples, then over each sample's images, and stacks the samples' tables
            samples=lambda model, shape_list: [i for i, shapes in enumerate(shape_list) for _ in shapes],
        ),
        # JoyImageEditPlusPipeline: height, width default to 1024 without a reference; Wan 2.1 VAE x 2 x 2 patches
        base_grid=(64, 64),
        time=Time("timestep", divide_by=1000.0),  # the pipeline passes the scheduler's timestep (0 .. 1000)
        title="JoyImage Edit Plus",
        note="_get_rotary_pos_embed_for_range per image, (cos, sin) interleaved",
    ),
)

for _row in ROWS:
    register_family(_row)

# Both pipelines call retrieve_timesteps without mu: their flow-matching shift is fixed, whatever the size.
keep_scheduler_shift(
    "diffusers.pipelines.joyimage.pipeline_joyimage_edit.JoyImageEditPipeline",
    "diffusers.pipelines.joyimage.pipeline_joyimage_edit_plus.JoyImageEditPlusPipeline",
)

# -- Wan Animate 2: the model method `_rope_freqs(offsets, device)` ------------------------------------------------

# _rope_freqs builds every axis from rope_params(512, ...): 512 positions per axis, whatever the video's size
WAN_ANIMATE2_TABLE_ROWS = 512


def _wan_animate2_dims(model) -> list[int]:
    """(frames, rows, cols) channels of the head dim d, as _rope_freqs splits it: d - 4 (d // 6), 2 (d // 6) twice."""
    d = _head_dim(model.config.dim, model.config.num_heads)
    return [d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)]


def _wan_animate2_positions(args) -> tuple:
    """_rope_freqs(offsets, device): row i of the table holds position i + offset on every axis; the attention takes
    rows [0, frames) (times the reference's stride), [0, rows) and [0, cols) of the axes' column blocks."""
    i = torch.arange(WAN_ANIMATE2_TABLE_ROWS, dtype=torch.float64).unsqueeze(-1)
    return (i + torch.tensor([float(o) for o in args["offsets"]], dtype=torch.float64),)


def _wan_animate2_tokens(model, hidden_states) -> tuple[int, int, int]:
    """(frames, rows, cols) of the call's first latent [C, T, H, W] in tokens: under "cached" the generated
    segment (the reference only enters as cached keys); under "extract" the driving-video segment, which the
    pipeline letterboxes to the generated video's height and width (it raises otherwise), so both passes of a
    segment take one scale. Every sample of a call holds seq_len tokens, so the first stands for all."""
    *_, t, h, w = hidden_states[0].shape
    pt, ph, pw = model.config.patch_size
    return t // pt, h // ph, w // pw


def _wan_animate2_time(timestep, kv_cache_mode):
    """The reference pass ("extract") is modulated at timestep 1 whatever it is handed (the model's
    `timestep * 0 + 1`): its tables take that time too. The denoising steps ("cached") use the one passed."""
    return timestep * 0 + 1 if kv_cache_mode == "extract" and isinstance(timestep, torch.Tensor) else None


register_family(
    Family(
        name="wan_animate2",
        classes=(T + "transformer_wan_animate_2.WanAnimate2Transformer3DModel",),
        module="_rope_freqs",
        # one complex128 table per call, for the generated segment (offsets 0, 0, 0) or the reference
        # (refer_offset_*: by default frame 1, rows from 0, columns after the reference's width); the cached
        # reference keys are stored before RoPE and rotated again with this call's reference table at every step
        mechanism=OwnTime(
            method=Method(
                method="_rope_freqs",
                axes_dims=_wan_animate2_dims,
                theta=lambda model: 10000.0,  # rope_params' default, which _rope_freqs keeps
                positions=_wan_animate2_positions,
                inputs=("hidden_states",),
                tokens=_wan_animate2_tokens,
                probe=lambda model: dict(offsets=(1, 0, 3), device=model.patch_embedding.weight.device),
                format=Complex(),
            ),
            inputs=("kv_cache_mode",),
            own_time=_wan_animate2_time,
            caches=("rope_freqs_cache",),
            # dynamo skips the stock forward (it iterates lists, reads grid sizes with .item() / .tolist()), so
            # under torch.compile the method is called from eager code
            eager=True,
        ),
        # WanAnimate2Blocks' defaults: height 800 x width 640 px (a target area, the aspect taken from the
        # reference image), Wan VAE 8 px x 2 x 2 patches
        base_grid=(50, 40),
        time=Time("timestep", divide_by=1000.0),  # the pipeline passes the scheduler's timestep (0 .. 1000)
        temporal_axis=0,
        title="Wan Animate 2",
        note="_rope_freqs per offset, complex; the reference pass at the model's own timestep 1",
    )
)

# WanAnimate2SegmentSchedulerResetStep calls scheduler.set_timesteps(num_inference_steps): no resolution shift.
keep_scheduler_shift("diffusers.modular_pipelines.wan_animate_2.modular_pipeline.WanAnimate2ModularPipeline")
