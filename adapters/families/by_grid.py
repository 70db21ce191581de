"""Family rows over the grid mechanism (adapters/mechanisms/grid.py): RoPE modules that build their tables from
the latent's grid size. Native grids are the resolutions the diffusers pipelines default to, in tokens;
timesteps are what those pipelines pass the transformer (the flow-matching timestep, 1000 = noise).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from dype_rope.pipelines import keep_scheduler_shift

from ..mechanisms.grid import Grid, device_of, grid_positions, patched_sizes
from ..mechanisms.grid_formats import CosSin, CosSinChannelsFirst, RotationMatrices
from ..table import Family, Time, refuse, register_family

DIFFUSERS = "diffusers.models.transformers"
SPATIAL = (1, 2)  # (frames, rows, columns): rows and columns rescaled, frames keep their RoPE
IMAGE = (0, 1)  # (rows, columns)
TIMESTEP_1000 = Time("timestep", divide_by=1000.0)


def latent_of(args: tuple, kwargs: dict) -> Tensor:
    """The latent a grid-built module is called with (first argument or `hidden_states`)."""
    return args[0] if args else kwargs["hidden_states"]


def latent_rope(
    stock: str,
    patch: Callable[[nn.Module], Sequence[int]],
    axes_dims: Callable[[nn.Module], Sequence[int]],
    theta: Callable[[nn.Module], float],
    axes: Callable[[nn.Module, Tensor], Sequence[Tensor | None]] = lambda module, latent: (),
    **layout,
) -> Grid:
    """A module called with the latent itself, [B, C, (F,) H, W], patchified by `patch(module)`: tokens
    arange from 0 on every axis unless `axes(module, latent)` gives an axis its positions."""

    def positions(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
        latent = latent_of(args, kwargs)
        sizes = patched_sizes(latent.shape, patch(module))
        return grid_positions(sizes, latent.device, axes(module, latent))

    def probe(module: nn.Module):
        p = tuple(patch(module))
        sizes = (3, 4, 5)[-len(p):]  # distinct sizes: a swapped axis shows
        return (torch.zeros(1, 1, *(n * q for n, q in zip(sizes, p)), device=device_of(module)),), {}

    return Grid(
        stock=stock,
        axes_dims=axes_dims,
        theta=theta,
        positions=positions,
        tokens=lambda model, module, shape: patched_sizes(shape, patch(module)),
        probe=probe,
        **layout,
    )


# -- Wan-style modules: tables precomputed in float64 up to rope_max_seq_len, cut to the grid; [1, L, 1, D] ---------

WAN_THETA = 10000.0  # the modules' constructor default; diffusers never passes another


def wan_split(module: nn.Module) -> tuple[int, int, int]:
    return module.t_dim, module.h_dim, module.w_dim


def chrono_split(module: nn.Module) -> tuple[int, int, int]:
    d = module.attention_head_dim  # ChronoEditRotaryPosEmbed.forward splits its tables this way
    return d - 2 * (d // 3), d // 3, d // 3


def chrono_frames(module: nn.Module, latent: Tensor) -> tuple[Tensor | None]:
    """ChronoEdit's two-frame calls (its temporal-reasoning steps end on the input and output frames) put the
    second frame at temporal_skip_len - 1."""
    if latent.shape[2] == 2:
        return (torch.tensor([0.0, module.temporal_skip_len - 1], device=latent.device),)
    return ()


def wan_like(stock: str, split=wan_split, **extra) -> Grid:
    return latent_rope(stock, lambda m: m.patch_size, split, lambda m: WAN_THETA, **extra)


def hunyuan_like(stock: str, **extra) -> Grid:
    """HunyuanVideo-style: (frames, rows, columns) of rope_dim channels, float32 angles, (cos, sin) [L, D]."""
    return latent_rope(
        stock, lambda m: (m.patch_size_t, m.patch_size, m.patch_size), lambda m: m.rope_dim, lambda m: m.theta, **extra
    )


def video(name: str, classes: str, grid: Grid, base: tuple[int, int], title: str, note: str, ppt: int = 16):
    return register_family(
        Family(
            name=name,
            classes=(classes,),
            module="rope",
            mechanism=grid,
            base_grid=base,
            pixels_per_token=ppt,
            time=TIMESTEP_1000,
            rescaled_axes=SPATIAL,
            temporal_axis=0,
            title=title,
            note=note,
        )
    )


# SkyReelsV2Pipeline's default 544 x 960 px (the 540P checkpoints), VAE 8 x patch 2.
video(
    "skyreels_v2", f"{DIFFUSERS}.transformer_skyreels_v2.SkyReelsV2Transformer3DModel",
    wan_like(f"{DIFFUSERS}.transformer_skyreels_v2.SkyReelsV2RotaryPosEmbed"), (34, 60), "SkyReels V2",
    "Wan-style RoPE; per-frame timesteps (diffusion forcing) take the noisiest frame's time",
)
# ChronoEditPipeline's default 480 x 832 px.
video(
    "chronoedit", f"{DIFFUSERS}.transformer_chronoedit.ChronoEditTransformer3DModel",
    wan_like(f"{DIFFUSERS}.transformer_chronoedit.ChronoEditRotaryPosEmbed", chrono_split, axes=chrono_frames),
    (30, 52), "ChronoEdit", "Wan-style RoPE; two-frame calls keep their temporal skip",
)
# WanAnimatePipeline's default 720 x 1280 px.
video(
    "wan_animate", f"{DIFFUSERS}.transformer_wan_animate.WanAnimateTransformer3DModel",
    wan_like(f"{DIFFUSERS}.transformer_wan_animate.WanRotaryPosEmbed"), (45, 80), "Wan Animate",
    "Wan-style RoPE over the reference frame and the segment's frames",
)
# SanaVideoPipeline's default 480 x 832 px with the Wan VAE (8x) and 2 x 2 patches.
video(
    "sana_video", f"{DIFFUSERS}.transformer_sana_video.SanaVideoTransformer3DModel",
    wan_like(f"{DIFFUSERS}.transformer_sana_video.WanRotaryPosEmbed"), (30, 52), "Sana-Video",
    "Wan-style RoPE",
)

# -- HunyuanVideo-style modules: get_1d_rotary_pos_embed per axis, float32 (cos, sin) [L, D] ---------------------

# HunyuanVideo15Pipeline's default: 16:9 at the transformer's target_size 640 = 480 x 848 px (the 480p
# checkpoints; 720p ones: base_resolution=(720, 1280)), VAE 16 x patch 1.
video(
    "hunyuan_video15", f"{DIFFUSERS}.transformer_hunyuan_video15.HunyuanVideo15Transformer3DModel",
    hunyuan_like(f"{DIFFUSERS}.transformer_hunyuan_video15.HunyuanVideo15RotaryPosEmbed"), (30, 53),
    "HunyuanVideo 1.5", "480p checkpoints' grid by default",
)
# MotifVideoPipeline's default 736 x 1280 px, VAE 8 x patch 2.
video(
    "motif_video", f"{DIFFUSERS}.transformer_motif_video.MotifVideoTransformer3DModel",
    hunyuan_like(f"{DIFFUSERS}.transformer_motif_video.MotifVideoRotaryPosEmbed"), (46, 80), "Motif-Video",
    "float64 angles cast to float32 tables",
)

# HunyuanImagePipeline's default: default_sample_size 64 latents x VAE 32 = 2048 x 2048 px, patch 1.
register_family(
    Family(
        name="hunyuan_image",
        classes=(f"{DIFFUSERS}.transformer_hunyuanimage.HunyuanImageTransformer2DModel",),
        module="rope",
        mechanism=latent_rope(
            f"{DIFFUSERS}.transformer_hunyuanimage.HunyuanImageRotaryPosEmbed",
            lambda m: m.patch_size, lambda m: m.rope_dim, lambda m: m.theta,
            n_axes=2,  # the refiner's 3-axis (frames, rows, columns) variant is refused, not misread
        ),
        base_grid=(64, 64),
        pixels_per_token=32,
        time=TIMESTEP_1000,
        rescaled_axes=IMAGE,
        title="HunyuanImage 2.1",
        note="(rows, columns) RoPE, theta 256",
    )
)

# -- GLM-Image: (rows, columns) halves of the head, pairs split in halves (cat([freqs, freqs])), float32 ---------

# GlmImagePipeline's default: the transformer's sample_size 128 latents x VAE 8 = 1024 x 1024 px, patch 2.
register_family(
    Family(
        name="glm_image",
        classes=(f"{DIFFUSERS}.transformer_glm_image.GlmImageTransformer2DModel",),
        module="rope",
        mechanism=latent_rope(
            f"{DIFFUSERS}.transformer_glm_image.GlmImageRotaryPosEmbed",
            lambda m: (m.patch_size, m.patch_size), lambda m: (m.dim // 2, m.dim // 2), lambda m: m.theta,
            format=CosSin("half"),
            timestep_shift=1.0,  # GlmImagePipeline passes the scheduler's timestep - 1
        ),
        base_grid=(64, 64),
        pixels_per_token=16,
        time=TIMESTEP_1000,
        rescaled_axes=IMAGE,
        title="GLM-Image",
        note="rows and columns each take half of the head, pairs split in halves",
    )
)

# -- HunyuanVideo Framepack: the module takes (frame_indices, height, width, device) ---------------------------------


def _framepack_call(args: tuple, kwargs: dict):
    names = ("frame_indices", "height", "width", "device")
    bound = dict(zip(names, args), **kwargs)
    return bound["frame_indices"], bound["height"], bound["width"], bound["device"]


def framepack_positions(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """Frames at the indices the model passes (the generated section, clean and history latents each have
    theirs), rows and columns arange over the latent's height and width in patches."""
    frames, height, width, device = _framepack_call(args, kwargs)
    sizes = (frames.shape[-1], height // module.patch_size, width // module.patch_size)
    return grid_positions(sizes, device, (frames.reshape(-1),))


# HunyuanVideoFramepackPipeline's default 720 x 1280 px, VAE 8 x patch 2. Every call of the module (the section
# being generated, then its clean and 2x / 4x history latents at the same height and width) takes the plan of
# the model's own latent.
register_family(
    Family(
        name="hunyuan_video_framepack",
        classes=(f"{DIFFUSERS}.transformer_hunyuan_video_framepack.HunyuanVideoFramepackTransformer3DModel",),
        module="rope",
        mechanism=Grid(
            stock=f"{DIFFUSERS}.transformer_hunyuan_video_framepack.HunyuanVideoFramepackRotaryPosEmbed",
            axes_dims=lambda m: m.rope_dim,
            theta=lambda m: m.theta,
            positions=framepack_positions,
            tokens=lambda model, m, shape: patched_sizes(shape, (m.patch_size_t, m.patch_size, m.patch_size)),
            probe=lambda m: ((), dict(
                frame_indices=torch.tensor([0.0, 2.0, 5.0]), height=4 * m.patch_size, width=5 * m.patch_size,
                device=device_of(m),
            )),
        ),
        base_grid=(45, 80),
        pixels_per_token=16,
        time=TIMESTEP_1000,
        rescaled_axes=SPATIAL,
        temporal_axis=0,
        title="HunyuanVideo Framepack",
        note="history and clean latents keep their frame indices and the generated section's scale",
    )
)


# -- Helios: (frame_indices [B, F], height, width, device) in tokens -> one [B, 2D, F, H, W] tensor ------------------


def helios_positions(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """[B, F * H * W, 3]: each sample's frames at its own indices, rows and columns arange."""
    frames, height, width, device = _framepack_call(args, kwargs)
    frames = frames.to(device=device, dtype=torch.float32)
    b, f = frames.shape
    grid = grid_positions((f, height, width), device)  # frames-major
    frame = frames.repeat_interleave(height * width, dim=1).unsqueeze(-1)
    return torch.cat([frame, grid[:, 1:].expand(b, -1, -1)], dim=-1)


# HeliosPipeline's default 384 x 640 px, VAE 8 x patch 2. The short / mid / long history latents are embedded by
# further calls at their own frame indices, on the generated latent's scale.
register_family(
    Family(
        name="helios",
        classes=(f"{DIFFUSERS}.transformer_helios.HeliosTransformer3DModel",),
        module="rope",
        mechanism=Grid(
            stock=f"{DIFFUSERS}.transformer_helios.HeliosRotaryPosEmbed",
            axes_dims=lambda m: (m.DT, m.DY, m.DX),
            theta=lambda m: m.theta,
            positions=helios_positions,
            tokens=lambda model, m, shape: patched_sizes(shape, model.config.patch_size),
            probe=lambda m: ((), dict(
                frame_indices=torch.tensor([[0.0, 2.0, 5.0]]), height=4, width=5, device=device_of(m),
            )),
            format=CosSinChannelsFirst(),
            per_sample=True,  # its tables carry the batch: one plan per sample
        ),
        base_grid=(24, 40),
        pixels_per_token=16,
        time=TIMESTEP_1000,
        rescaled_axes=SPATIAL,
        temporal_axis=0,
        title="Helios",
        note="history latents keep their frame indices and the generated chunk's scale",
    )
)


# -- Kandinsky 5: visual_rope_embeddings(shape, pos, scale_factor) -> rotation matrices [B, F, H, W, 1, D/2, 2, 2] ---


def kandinsky_rope(
    stock: str, names: tuple[str, ...], probe_args: Callable[[Sequence[Tensor]], tuple], per_sample: bool
) -> Grid:
    """Kandinsky's RoPE3D: per-axis index tensors `pos` and a `scale_factor` dividing every axis's angles.

    The positions DyPE uses are the pipeline's, divided by the call's scale_factor as the module divides its
    angles: Kandinsky's own position interpolation stays, DyPE moves the frequencies on top."""

    def positions(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
        bound = dict(zip(names, args), **kwargs)
        pos, scale_factor = bound["pos"], bound.get("scale_factor", (1.0, 1.0, 1.0))
        device = module.get_buffer(module_buffer(module)).device
        axes = [torch.as_tensor(p, device=device).to(torch.float32) / f for p, f in zip(pos, scale_factor)]
        return grid_positions([len(a) for a in axes], device, axes)

    def probe(module: nn.Module):
        device = module.get_buffer(module_buffer(module)).device
        return probe_args([torch.arange(n, device=device) for n in (3, 4, 5)]), {}

    return Grid(
        stock=stock,
        axes_dims=lambda m: m.axes_dims,
        theta=lambda m: m.max_period,
        positions=positions,
        # the latent is channels-last [B, F, H, W, C]
        tokens=lambda model, m, shape: patched_sizes(shape[:-1], model.patch_size),
        probe=probe,
        format=RotationMatrices(),
        per_sample=per_sample,
    )


def module_buffer(module: nn.Module) -> str:
    """The first of the module's precomputed angle tables (Kandinsky 5: args_0, Kandinsky 6: angles_0)."""
    return next(name for name, _ in module.named_buffers())


# Kandinsky5T2VPipeline's default 512 x 768 px, VAE 8 x patch 2 (the image pipelines default to 1024 x 1024:
# pass base_resolution=1024 for those checkpoints).
register_family(
    Family(
        name="kandinsky5",
        classes=(f"{DIFFUSERS}.transformer_kandinsky.Kandinsky5Transformer3DModel",),
        module="visual_rope_embeddings",
        mechanism=kandinsky_rope(
            f"{DIFFUSERS}.transformer_kandinsky.Kandinsky5RoPE3D", ("shape", "pos", "scale_factor"),
            lambda pos: ((1, *(len(p) for p in pos)), pos, (1.0, 2.0, 2.0)),
            per_sample=True,  # its tables are repeated over the batch: one plan per sample
        ),
        base_grid=(32, 48),
        pixels_per_token=16,
        time=TIMESTEP_1000,
        rescaled_axes=SPATIAL,
        temporal_axis=0,
        title="Kandinsky 5",
        note="angles (pos / scale_factor) x DyPE's frequencies: the pipeline's scale_factor is kept, DyPE acts on top",
    )
)

# Kandinsky6TI2VAPipeline's default 512 x 768 px, VAE 8 x patch 2. The audio stream's 1-D RoPE is left as it is;
# the model's config scale_factor divides the video positions as in Kandinsky 5.
register_family(
    Family(
        name="kandinsky6",
        classes=(f"{DIFFUSERS}.transformer_kandinsky6.Kandinsky6Transformer3DModel",),
        module="visual_rope_embeddings",
        mechanism=kandinsky_rope(
            f"{DIFFUSERS}.transformer_kandinsky6.Kandinsky6RoPE3D", ("pos", "scale_factor"),
            lambda pos: (pos, (1.0, 2.0, 2.0)),
            per_sample=False,  # one table [F, H, W, ...] for the whole batch
        ),
        base_grid=(32, 48),
        pixels_per_token=16,
        time=TIMESTEP_1000,
        rescaled_axes=SPATIAL,
        temporal_axis=0,
        title="Kandinsky 6",
        note="video RoPE as Kandinsky 5's; the audio stream's 1-D RoPE is not rescaled",
    )
)

# -- grid-built encodings DyPE cannot rescale meaningfully ----------------------------------------------------------

refuse(
    (f"{DIFFUSERS}.transformer_easyanimate.EasyAnimateTransformer3DModel",),
    "EasyAnimate's RoPE maps every latent grid into its fixed 60 x 90-latent training region (a linspace over the "
    "crop region of get_3d_rotary_pos_embed): positions never leave the trained range, so the model interpolates "
    "by itself and there is no extrapolation for DyPE to take over",
)
refuse(
    (f"{DIFFUSERS}.transformer_mochi.MochiTransformer3DModel",),
    "Mochi's RoPE has learned frequencies that mix frames, rows and columns in every pair (pos_frequencies "
    "[3, heads, D/2]) on positions scaled to a fixed area, so no pair belongs to one image axis and no position "
    "leaves the trained range",
)

# -- pipelines: those whose scheduler shift does not depend on the resolution keep it under dype_rope.enable() ----
# (GlmImagePipeline, MotifVideoPipeline, HeliosPipeline and HunyuanVideoFramepackPipeline compute a resolution shift
# mu and get enable()'s pinned or linear one.)

PIPELINES = "diffusers.pipelines"
keep_scheduler_shift(
    # UniPC flow sigmas with a fixed flow_shift
    *(f"{PIPELINES}.skyreels_v2.{m}" for m in (
        "pipeline_skyreels_v2.SkyReelsV2Pipeline", "pipeline_skyreels_v2_i2v.SkyReelsV2ImageToVideoPipeline",
        "pipeline_skyreels_v2_diffusion_forcing.SkyReelsV2DiffusionForcingPipeline",
        "pipeline_skyreels_v2_diffusion_forcing_i2v.SkyReelsV2DiffusionForcingImageToVideoPipeline",
        "pipeline_skyreels_v2_diffusion_forcing_v2v.SkyReelsV2DiffusionForcingVideoToVideoPipeline",
    )),
    f"{PIPELINES}.wan.pipeline_wan_animate.WanAnimatePipeline",
    # DPM-Solver flow sigmas with a fixed flow_shift
    f"{PIPELINES}.sana_video.pipeline_sana_video.SanaVideoPipeline",
    f"{PIPELINES}.sana_video.pipeline_sana_video_i2v.SanaImageToVideoPipeline",
    # FlowMatchEulerDiscreteScheduler with its fixed `shift`, set_timesteps called without mu
    f"{PIPELINES}.chronoedit.pipeline_chronoedit.ChronoEditPipeline",
    f"{PIPELINES}.hunyuan_video1_5.pipeline_hunyuan_video1_5.HunyuanVideo15Pipeline",
    f"{PIPELINES}.hunyuan_video1_5.pipeline_hunyuan_video1_5_image2video.HunyuanVideo15ImageToVideoPipeline",
    f"{PIPELINES}.hunyuan_image.pipeline_hunyuanimage.HunyuanImagePipeline",
    *(f"{PIPELINES}.kandinsky5.{m}" for m in (
        "pipeline_kandinsky.Kandinsky5T2VPipeline", "pipeline_kandinsky_i2v.Kandinsky5I2VPipeline",
        "pipeline_kandinsky_t2i.Kandinsky5T2IPipeline", "pipeline_kandinsky_i2i.Kandinsky5I2IPipeline",
    )),
    f"{PIPELINES}.kandinsky6.pipeline_kandinsky6_ti2va.Kandinsky6TI2VAPipeline",
)
