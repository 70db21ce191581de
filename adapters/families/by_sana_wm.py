"""The Sana-WM row (stage 1 of SanaWMPipeline) over the grid mechanism with complex tables
(adapters/mechanisms/grid_complex.py). docs/families_grid.md gives its layout; the stage-2 refiner is refused in
adapters/families/refused.py.

SanaWMRotaryPosEmbed precomputes complex tables for positions 0 .. max_seq_len - 1 of every axis (frames, rows,
columns: Wan's split of the head, get_1d_rotary_pos_embed in float32) and cuts them to the latent's
(frames, rows, columns) in patches, frames-major: [1, 1, F * H * W, D/2]. Every attention block (the GDN linear
attention's numerator stream and the softmax blocks) rotates q and k by it, and the camera branch (UCPE) takes
its first pairs of each axis (_slice_rope_for_cam), so it follows DyPE's tables too.
"""

from __future__ import annotations

from torch import Tensor, nn

from dype_rope.pipelines import keep_scheduler_shift

from ..mechanisms.grid import Grid, grid_positions, patched_sizes
from ..mechanisms.grid_complex import Complex, FrameTimedGrid
from ..table import Family, Time, register_family

MODELS = "diffusers.models.transformers.transformer_sana_wm"
# SanaWMRotaryPosEmbed's constructor default; SanaWMTransformer3DModel never passes another (the probe checks).
THETA = 10000.0


def sana_wm_split(module: nn.Module) -> tuple[int, int, int]:
    """Channels of (frames, rows, columns), as SanaWMRotaryPosEmbed.forward splits its table's pairs."""
    d = module.attention_head_dim
    return d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)


def _device(module: nn.Module, args: tuple, kwargs: dict):
    """Where the call puts its table (its `device` argument), else where the module keeps it."""
    device = kwargs["device"] if "device" in kwargs else (args[1] if len(args) > 1 else None)
    return device if device is not None else module.freqs.device


def sana_wm_positions(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """forward(fhw, device): arange from 0 on the (frames, rows, columns) in patches, frames-major."""
    fhw = args[0] if args else kwargs["fhw"]
    return grid_positions(tuple(int(n) for n in fhw), _device(module, args, kwargs))


def precomputed_tables(args: tuple, kwargs: dict) -> str | None:
    """The forward's `pos_embeds` (and `cam_pos_embeds["pos_embeds_cam"]`) replace the module's tables."""
    if kwargs.get("pos_embeds") is not None:
        return "precomputed `pos_embeds` bypass the RoPE module DyPE replaces; leave them None"
    cam = kwargs.get("cam_pos_embeds")
    if isinstance(cam, dict) and cam.get("pos_embeds_cam") is not None:
        return "precomputed cam_pos_embeds['pos_embeds_cam'] bypass the RoPE module DyPE replaces; leave it out"
    return None


SANA_WM_GRID = Grid(
    stock=f"{MODELS}.SanaWMRotaryPosEmbed",
    axes_dims=sana_wm_split,
    theta=lambda m: THETA,
    positions=sana_wm_positions,
    # the latent [B, C, T, H, W] in (1, 1, 1) patches (pack_latents is fixed to False in the model)
    tokens=lambda model, m, shape: patched_sizes(shape, model.patch_size),
    probe=lambda m: (((3, 4, 5),), {"device": m.freqs.device}),  # distinct sizes: a swapped axis shows
    format=Complex(),
)

# SanaWMPipeline's default 704 x 1280 px (TARGET_HEIGHT x TARGET_WIDTH of pipelines/sana_wm/cam_utils.py, "fixed for
# the public model"), LTX-2 VAE 32x, patch (1, 1, 1): 22 x 40 tokens. The pipeline passes the scheduler's
# timestep (1000 = noise) per latent frame, [B, 1, T], the first (conditioning) frame pinned at 0.
register_family(
    Family(
        name="sana_wm",
        classes=(f"{MODELS}.SanaWMTransformer3DModel",),
        module="rope",
        mechanism=FrameTimedGrid(SANA_WM_GRID, refusal=precomputed_tables),
        base_grid=(22, 40),
        pixels_per_token=32,
        time=Time("timestep", divide_by=1000.0),
        rescaled_axes=(1, 2),
        temporal_axis=0,
        title="Sana-WM",
        note="complex Wan-style RoPE; per-frame timesteps take the noisiest frame's; the camera branch follows",
    )
)

# set_timesteps(num_inference_steps) without mu: FlowMatchEulerDiscreteScheduler's fixed shift.
keep_scheduler_shift("diffusers.pipelines.sana_wm.pipeline_sana_wm.SanaWMPipeline")
