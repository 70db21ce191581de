"""Families on the grid mechanism (adapters/families/by_grid.py): tiny models from configs, their inputs as the
pipelines build them, and how their tables read. Positions are written by hand here, as each model lays out its
tokens (frames-major, arange from 0; ChronoEdit's two-frame skip); the reference is tests/reference_dype.py."""

from __future__ import annotations

import torch

from .row import Family, RopeLayout, Sampler, interleaved, matrix_pairs
from .tiny import tiny
from .video import video_positions

TEXT = 5
# head dim 18: Wan-style modules split it 6 / 6 / 6 (frames / rows / columns), 3 pairs per axis.
TINY_WAN_LIKE = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=18, in_channels=4, out_channels=4, text_dim=16,
    freq_dim=16, ffn_dim=32, num_layers=1, rope_max_seq_len=64,
)
# Wan Animate: latent = noise (4) + reference (4) + mask (4) channels, a 16 x 16 px face video for the motion
# encoder, pose latents on every frame but the reference one.
TINY_WAN_ANIMATE = dict(
    TINY_WAN_LIKE, in_channels=None, latent_channels=4, image_dim=8,
    motion_encoder_channel_sizes={"4": 8, "8": 8, "16": 8}, motion_encoder_size=16, motion_style_dim=8, motion_dim=4,
    motion_encoder_dim=8, face_encoder_hidden_dim=8, face_encoder_num_heads=2, inject_face_latents_blocks=1,
    motion_encoder_batch_size=4,
)
TINY_FRAMEPACK = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
    num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=16, pooled_projection_dim=8,
    rope_axes_dim=(4, 6, 6), has_image_proj=True, image_proj_dim=8, has_clean_x_embedder=True,
)
TINY_HELIOS = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=18, in_channels=4, out_channels=4, text_dim=16,
    freq_dim=16, ffn_dim=32, num_layers=1, rope_dim=(6, 6, 6),
)
TINY_KANDINSKY5 = dict(
    in_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16, out_visual_dim=4, patch_size=(1, 2, 2), model_dim=32,
    ff_dim=32, num_text_blocks=1, num_visual_blocks=1, axes_dims=(4, 6, 6),
)
TINY_KANDINSKY6 = dict(
    in_visual_dim=4, out_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16, patch_size=(1, 2, 2), model_dim=32,
    ff_dim=32, num_text_blocks=1, num_visual_blocks=1, axes_dims=(4, 6, 6), visual_cond=False, in_audio_dim=4,
    out_audio_dim=4,
)
# Kandinsky5T2VPipeline's scale_factor for 480p-sized videos (1, 2, 2): rows and columns at half their index.
KANDINSKY_SCALE = (1.0, 2.0, 2.0)
TINY_SANA_VIDEO = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=18, num_layers=1,
    num_cross_attention_heads=2, cross_attention_head_dim=18, cross_attention_dim=36, caption_channels=16,
)
TINY_HV15 = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_refiner_layers=1,
    text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=8, rope_axes_dim=(4, 6, 6), task_type="t2v",
)
TINY_MOTIF = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
    text_embed_dim=16, rope_axes_dim=(4, 6, 6),
)
TINY_HUNYUAN_IMAGE = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
    num_refiner_layers=1, text_embed_dim=16, rope_axes_dim=(8, 8),
)
TINY_GLM = dict(
    patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=16, num_attention_heads=2,
    text_embed_dim=16, time_embed_dim=16, condition_dim=8, prior_vq_quantizer_codebook_size=32,
)
# HunyuanVideo / Motif turn positions by float32 angles: |angle| <= 24 positions x 1 rad, rounded at 2**-24.
ANGLE_TOL = 24 * 2.0**-23


def filled_zeros(model, seed: int = 3):
    """Random weights where the model initialises them to zero (Kandinsky 5's modulations), so that its output
    depends on its attention, and so on the RoPE tables."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _noise(seed: int):
    return torch.Generator().manual_seed(seed)


def wan_like_inputs(grid, batch=1, cond=None, seed=1):
    """Wan-style models: latent [B, C, F, 2 rows, 2 cols] (2 x 2 patches), umT5-like text."""
    g = _noise(seed)
    f, h, w = grid
    return dict(
        hidden_states=torch.randn(batch, 4, f, 2 * h, 2 * w, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        return_dict=False,
    )


def wan_animate_inputs(grid, batch=1, cond=None, seed=1):
    """Wan Animate: frame 0 is the reference image, the others the segment; the face video has 4 frames per
    latent frame past the first (the face encoder's temporal stride) and one more."""
    g = _noise(seed)
    f, h, w = grid
    return dict(
        hidden_states=torch.randn(batch, 12, f, 2 * h, 2 * w, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        encoder_hidden_states_image=torch.randn(batch, 3, 8, generator=g),
        pose_hidden_states=torch.randn(batch, 4, f - 1, 2 * h, 2 * w, generator=g),
        face_pixel_values=torch.randn(batch, 3, 4 * (f - 2) + 1, 16, 16, generator=g),
        return_dict=False,
    )


# Framepack's frame indices as its pipeline splits them (inverted anti-drifting): the 4x history, the 2x history,
# the clean latents (the image prefix at 0 and the 1x history), then the section being generated.
FRAMEPACK_HISTORY = dict(history_4x=(1, 2, 3), history_2x=(4, 5), clean=(0, 6))
FRAMEPACK_START = 7


def framepack_inputs(grid, batch=1, cond=None, seed=1):
    g = _noise(seed)
    f, h, w = grid

    def latent(frames):
        return torch.randn(batch, 4, frames, 2 * h, 2 * w, generator=g)

    x = dict(
        hidden_states=latent(f),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        encoder_attention_mask=torch.ones(batch, TEXT),
        pooled_projections=torch.randn(batch, 8, generator=g),
        image_embeds=torch.randn(batch, 3, 8, generator=g),
        indices_latents=torch.arange(f) + FRAMEPACK_START,
        guidance=torch.full((batch,), 6000.0),
        return_dict=False,
    )
    for name, indices in FRAMEPACK_HISTORY.items():
        key = "latents_clean" if name == "clean" else f"latents_{name}"
        x[key] = latent(len(indices))
        x[f"indices_{key}"] = torch.tensor(indices)
    return x


def framepack_positions(grid, cond, calls):
    """One table per call, in the model's order: the generated section, clean, 2x and 4x history, all on the
    generated latent's rows and columns."""
    f, h, w = grid
    history = [torch.tensor(FRAMEPACK_HISTORY[k]) for k in ("clean", "history_2x", "history_4x")]
    frames = [torch.arange(f) + FRAMEPACK_START, *history]
    out = []
    for indices in frames:
        pos = video_positions(len(indices), h, w)
        pos[:, 0] = indices.double().repeat_interleave(h * w)
        out.append(pos)
    return out


# Helios's history latents (the pipeline's long / mid / short split), each at its own frame indices, before the
# chunk being generated.
HELIOS_HISTORY = dict(long=(0,), mid=(1, 2), short=(3, 4))
HELIOS_START = 5


def helios_inputs(grid, batch=1, cond=None, seed=1):
    g = _noise(seed)
    f, h, w = grid
    x = dict(
        hidden_states=torch.randn(batch, 4, f, 2 * h, 2 * w, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        indices_hidden_states=(torch.arange(f) + HELIOS_START).expand(batch, -1),
        return_dict=False,
    )
    for name, indices in HELIOS_HISTORY.items():
        x[f"latents_history_{name}"] = torch.randn(batch, 4, len(indices), 2 * h, 2 * w, generator=g)
        x[f"indices_latents_history_{name}"] = torch.tensor(indices).expand(batch, -1)
    return x


def helios_positions(grid, cond, calls):
    """The model's calls in order: the generated chunk, then its short, mid and long history."""
    f, h, w = grid
    frames = [torch.arange(f) + HELIOS_START] + [torch.tensor(HELIOS_HISTORY[k]) for k in ("short", "mid", "long")]
    out = []
    for indices in frames:
        pos = video_positions(len(indices), h, w)
        pos[:, 0] = indices.double().repeat_interleave(h * w)
        out.append(pos)
    return out


def channels_first(out) -> list:
    """Helios: one [B, 2D, F, H, W] tensor, cos channels then sin channels, pairs interleaved in each."""
    table = out[0].flatten(1).T  # [L, 2D] of the first sample
    cos, sin = table.chunk(2, dim=-1)
    return [interleaved(cos, sin)]


def kandinsky5_inputs(grid, batch=1, cond=None, seed=1):
    """Kandinsky 5: a channels-last latent, positions as index ranges per axis, the pipeline's scale_factor."""
    g = _noise(seed)
    f, h, w = grid
    return dict(
        hidden_states=torch.randn(batch, f, 2 * h, 2 * w, 4, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        pooled_projections=torch.randn(batch, 8, generator=g),
        visual_rope_pos=[torch.arange(f), torch.arange(h), torch.arange(w)],
        text_rope_pos=torch.arange(TEXT),
        scale_factor=KANDINSKY_SCALE,
        return_dict=False,
    )


def kandinsky6_inputs(grid, batch=1, cond=None, seed=1):
    """Kandinsky 6: a channels-last latent, the video positions by default (arange), its config's scale_factor."""
    g = _noise(seed)
    f, h, w = grid
    return dict(
        hidden_states=torch.randn(batch, f, 2 * h, 2 * w, 4, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        pooled_projections=torch.randn(batch, 8, generator=g),
        audio_hidden_states=torch.randn(batch, 3, 4, generator=g),
        return_dict=False,
    )


def kandinsky5_positions(grid, cond, calls):
    return [video_positions(*grid) / torch.tensor(KANDINSKY_SCALE, dtype=torch.float64)]


def hv15_inputs(grid, batch=1, cond=None, seed=1):
    g = _noise(seed)
    return dict(
        hidden_states=torch.randn(batch, 4, *grid, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        encoder_attention_mask=torch.ones(batch, TEXT),
        encoder_hidden_states_2=torch.randn(batch, 3, 8, generator=g),
        encoder_attention_mask_2=torch.ones(batch, 3),
        image_embeds=torch.zeros(batch, 2, 8),  # text-to-video: the pipeline passes zeros
        return_dict=False,
    )


def motif_inputs(grid, batch=1, cond=None, seed=1):
    g = _noise(seed)
    f, h, w = grid
    return dict(
        hidden_states=torch.randn(batch, 4, f, 2 * h, 2 * w, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        encoder_attention_mask=torch.ones(batch, TEXT),
        return_dict=False,
    )


def hunyuan_image_inputs(grid, batch=1, cond=None, seed=1):
    g = _noise(seed)
    return dict(
        hidden_states=torch.randn(batch, 4, *grid, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        encoder_attention_mask=torch.ones(batch, TEXT),
        return_dict=False,
    )


def glm_inputs(grid, batch=1, cond=None, seed=1):
    """GLM-Image: a latent of 2 x 2 patches and one prior (AR) token per image token."""
    g = _noise(seed)
    h, w = grid
    return dict(
        hidden_states=torch.randn(batch, 4, 2 * h, 2 * w, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 16, generator=g),
        prior_token_id=torch.randint(0, 32, (batch, h * w), generator=g),
        prior_token_drop=torch.zeros(batch, h * w, dtype=torch.bool),
        target_size=torch.tensor([[16.0 * h, 16.0 * w]]).expand(batch, 2),
        crop_coords=torch.zeros(batch, 2),
        return_dict=False,
    )


def halves(cos, sin) -> torch.Tensor:
    """(cos, sin) [L, D] with pair j on channels j and j + D/2 -> [L, D/2, 2]."""
    half = cos.shape[-1] // 2
    assert torch.equal(cos[:, :half], cos[:, half:]) and torch.equal(sin[:, :half], sin[:, half:])
    return torch.stack([cos[:, :half], sin[:, :half]], -1).double()


def image_positions(rows: int, cols: int) -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([r, c], dim=-1).reshape(-1, 2).double()


def chrono_positions(frames: int, rows: int, cols: int) -> torch.Tensor:
    """ChronoEdit: a two-frame latent has its frames at 0 and temporal_skip_len - 1 (8 - 1 by default)."""
    pos = video_positions(frames, rows, cols)
    if frames == 2:
        pos[:, 0] = pos[:, 0] * 7
    return pos


def scheduler_steps(cls_name: str, config: dict, steps: int = 30):
    """(timesteps, t) of a scheduler as the pipelines use it: they pass its timesteps, so t = timestep / 1000,
    checked within 1e-3 of the scheduler's own sigmas (integer timesteps round them)."""
    import diffusers

    scheduler = getattr(diffusers, cls_name).from_config(config)
    scheduler.set_timesteps(steps)
    t = scheduler.timesteps.double() / 1000
    torch.testing.assert_close(t, scheduler.sigmas[: len(t)].double(), rtol=0, atol=1e-3)
    return scheduler.timesteps, t


UNIPC_FLOW = dict(num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0)
DPM_FLOW = dict(num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0)
EULER_FLOW = dict(num_train_timesteps=1000, shift=7.0)


def _sampler(name, cls_name, config):
    return Sampler(name, lambda: scheduler_steps(cls_name, config))


def _video(name, build, make_inputs, axes, theta, tol, default_base, sampler, positions=None, tables=None,
           encoding="rope", output=lambda out: out[0], **extra):
    return Family(
        name=name,
        adapter=name,
        build=build,
        make_inputs=make_inputs,
        time_arg="timestep",
        pipeline_time=lambda ts: ts,
        encoding=encoding,
        layout=RopeLayout(
            axes=axes,
            theta=theta,
            tables=tables or (lambda out: [interleaved(*out)]),  # [1, L, 1, D] or [L, D]
            positions=positions or (lambda grid, cond, calls: [video_positions(*grid)]),
            dtype=torch.float32,
            tol=tol,
        ),
        base=(3, 4),
        below=(((3, 3, 4), (3, 4)), ((2, 2, 3), (3, 4)), ((5, 3, 4), (5, 3, 4))),  # last: frames rescaled too
        above=(2, 6, 7),
        default_base=default_base,
        samplers=(sampler,),
        output=output,
        lead=(2,),
        **extra,
    )


def _image(name, build, make_inputs, axes, theta, tables, tol, default_base, sampler, pipeline_time=lambda ts: ts):
    return Family(
        name=name,
        adapter=name,
        build=build,
        make_inputs=make_inputs,
        time_arg="timestep",
        pipeline_time=pipeline_time,
        encoding="rope",
        layout=RopeLayout(
            axes=axes,
            theta=theta,
            tables=tables,
            positions=lambda grid, cond, calls: [image_positions(*grid)],
            dtype=torch.float32,
            tol=tol,
            rescaled=(0, 1),
        ),
        base=(3, 4),
        below=(((3, 4), (3, 4)), ((2, 3), (3, 4))),
        above=(6, 7),
        default_base=default_base,
        samplers=(sampler,),
        output=lambda out: out[0],
    )


SKYREELS_V2 = _video(
    "skyreels_v2", lambda seed=0, **o: tiny("SkyReelsV2Transformer3DModel", TINY_WAN_LIKE, seed, **o),
    wan_like_inputs, (6, 6, 6), 10000.0, 2e-7, (34, 60), _sampler("unipc-flow", "UniPCMultistepScheduler", UNIPC_FLOW),
    direct_call=lambda: (torch.zeros(1, 4, 2, 4, 4),),
)
CHRONOEDIT = _video(
    "chronoedit", lambda seed=0, **o: tiny("ChronoEditTransformer3DModel", TINY_WAN_LIKE, seed, **o),
    wan_like_inputs, (6, 6, 6), 10000.0, 2e-7, (30, 52),
    _sampler("flow-match-euler", "FlowMatchEulerDiscreteScheduler", EULER_FLOW),
    positions=lambda grid, cond, calls: [chrono_positions(*grid)],
    direct_call=lambda: (torch.zeros(1, 4, 2, 4, 4),), cp_hooks=True,
)
WAN_ANIMATE = _video(
    "wan_animate", lambda seed=0, **o: tiny("WanAnimateTransformer3DModel", TINY_WAN_ANIMATE, seed, **o),
    wan_animate_inputs, (6, 6, 6), 10000.0, 2e-7, (45, 80),
    _sampler("unipc-flow", "UniPCMultistepScheduler", UNIPC_FLOW),
)
SANA_VIDEO = _video(
    "sana_video", lambda seed=0, **o: tiny("SanaVideoTransformer3DModel", TINY_SANA_VIDEO, seed, **o),
    wan_like_inputs, (6, 6, 6), 10000.0, 2e-7, (30, 52), _sampler("dpm-flow", "DPMSolverMultistepScheduler", DPM_FLOW),
)
HUNYUAN_VIDEO15 = _video(
    "hunyuan_video15", lambda seed=0, **o: tiny("HunyuanVideo15Transformer3DModel", TINY_HV15, seed, **o),
    hv15_inputs, (4, 6, 6), 256.0, ANGLE_TOL, (30, 53),
    _sampler("flow-match-euler", "FlowMatchEulerDiscreteScheduler", EULER_FLOW),
    fullgraph=False,  # the stock model branches on torch.all(image_embeds == 0) (text- or image-to-video)
)
FRAMEPACK = _video(
    "hunyuan_video_framepack",
    lambda seed=0, **o: tiny("HunyuanVideoFramepackTransformer3DModel", TINY_FRAMEPACK, seed, **o),
    framepack_inputs, (4, 6, 6), 256.0, ANGLE_TOL, (45, 80),
    _sampler("flow-match-euler", "FlowMatchEulerDiscreteScheduler", EULER_FLOW), positions=framepack_positions,
)
HELIOS = _video(
    "helios", lambda seed=0, **o: tiny("HeliosTransformer3DModel", TINY_HELIOS, seed, **o),
    helios_inputs, (6, 6, 6), 10000.0, ANGLE_TOL, (24, 40),
    _sampler("helios", "HeliosScheduler", dict(stages=1)), positions=helios_positions, tables=channels_first,
)
KANDINSKY5 = _video(
    "kandinsky5", lambda seed=0, **o: filled_zeros(tiny("Kandinsky5Transformer3DModel", TINY_KANDINSKY5, seed, **o)),
    kandinsky5_inputs, (4, 6, 6), 10000.0, ANGLE_TOL, (32, 48),
    _sampler("flow-match-euler", "FlowMatchEulerDiscreteScheduler", EULER_FLOW), positions=kandinsky5_positions,
    tables=lambda out: [matrix_pairs(out)], encoding="visual_rope_embeddings", output=lambda out: out,
)
KANDINSKY6 = _video(
    "kandinsky6", lambda seed=0, **o: filled_zeros(tiny("Kandinsky6Transformer3DModel", TINY_KANDINSKY6, seed, **o)),
    kandinsky6_inputs, (4, 6, 6), 10000.0, ANGLE_TOL, (32, 48),
    _sampler("flow-match-euler", "FlowMatchEulerDiscreteScheduler", EULER_FLOW), positions=kandinsky5_positions,
    tables=lambda out: [matrix_pairs(out)], encoding="visual_rope_embeddings",
)
MOTIF_VIDEO = _video(
    "motif_video", lambda seed=0, **o: tiny("MotifVideoTransformer3DModel", TINY_MOTIF, seed, **o),
    motif_inputs, (4, 6, 6), 256.0, 2e-7, (46, 80),
    _sampler("flow-match-euler", "FlowMatchEulerDiscreteScheduler", EULER_FLOW),
)
HUNYUAN_IMAGE = _image(
    "hunyuan_image", lambda seed=0, **o: tiny("HunyuanImageTransformer2DModel", TINY_HUNYUAN_IMAGE, seed, **o),
    hunyuan_image_inputs, (8, 8), 256.0, lambda out: [interleaved(*out)], ANGLE_TOL, (64, 64),
    _sampler("flow-match-euler", "FlowMatchEulerDiscreteScheduler", EULER_FLOW),
)
GLM_IMAGE = _image(
    "glm_image", lambda seed=0, **o: tiny("GlmImageTransformer2DModel", TINY_GLM, seed, **o),
    glm_inputs, (8, 8), 10000.0, lambda out: [halves(*out)], ANGLE_TOL, (64, 64),
    _sampler("flow-match-euler", "FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=1.0)),
    pipeline_time=lambda ts: ts - 1,  # GlmImagePipeline passes the scheduler's timestep - 1
)
