"""Family rows over the mechanisms of models that receive their tables as a forward argument, or compute them
from scaled coordinates (adapters/mechanisms/). docs/families_passed.md says what DyPE's scale means for each
row and why the refused models are refused."""

from __future__ import annotations

from ..mechanisms.axis_theta import AxisThetaGrid
from ..mechanisms.ltx import CentredCoordinates
from ..mechanisms.ltx2 import PixelMidpointCoordinates
from ..mechanisms.passed import PassedAxisTables, PassedGridTables
from dype_rope.pipelines import keep_scheduler_shift

from ..table import Family, Time, refuse, register_family

# Their schedules (DDIM / DPM, fixed Karras or flow sigmas) do not depend on the image size: enable() leaves them.
keep_scheduler_shift(
    "diffusers.pipelines.allegro.pipeline_allegro.AllegroPipeline",
    "diffusers.pipelines.cogvideo.pipeline_cogvideox.CogVideoXPipeline",
    "diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video.CogVideoXImageToVideoPipeline",
    "diffusers.pipelines.cogvideo.pipeline_cogvideox_video2video.CogVideoXVideoToVideoPipeline",
    "diffusers.pipelines.cogvideo.pipeline_cogvideox_fun_control.CogVideoXFunControlPipeline",
    "diffusers.pipelines.cosmos.pipeline_cosmos2_text2image.Cosmos2TextToImagePipeline",
    "diffusers.pipelines.cosmos.pipeline_cosmos2_video2world.Cosmos2VideoToWorldPipeline",
    "diffusers.pipelines.cosmos.pipeline_cosmos2_5_predict.Cosmos2_5_PredictBasePipeline",
)

COGVIDEOX = "diffusers.models.transformers.cogvideox_transformer_3d.CogVideoXTransformer3DModel"


def _cogvideox_refusal(config) -> str | None:
    if not getattr(config, "use_rotary_positional_embeddings", False):
        # CogVideoX-2b: absolute sin-cos position embeddings added to the tokens, no RoPE
        return "this configuration has no RoPE (use_rotary_positional_embeddings=False: absolute sin-cos embeddings)"
    if getattr(config, "patch_size_t", None) is None:
        # CogVideoX 1.0 (5b): CogVideoXPipeline fits the latent grid into the sample_height x sample_width box
        # (get_resize_crop_region_for_grid, grid_type="linspace"), so its positions are already interpolated,
        # with centring offsets, at every size: see docs/families_passed.md
        return (
            "CogVideoX 1.0 (patch_size_t=None) is handed positions its pipeline already interpolates into the "
            "training box (sample_height x sample_width, aspect kept, centred) at every resolution: a static "
            "position interpolation that DyPE would stack its own on, not an extrapolated axis to schedule"
        )
    return None


def _cogvideox_probe(model):
    """CogVideoXPipeline's own tables (get_3d_rotary_pos_embed, grid_type="slice") of a 2 x 3 x 4 grid."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    c = model.config
    grid = (2, 3, 4)
    device = next(model.parameters()).device
    tables = get_3d_rotary_pos_embed(
        embed_dim=c.attention_head_dim, crops_coords=None, grid_size=grid[1:], temporal_size=grid[0],
        grid_type="slice", max_size=grid[1:], device=device,
    )
    return grid, tables


register_family(
    Family(
        name="cogvideox",
        classes=(COGVIDEOX,),
        module="",  # no RoPE module: CogVideoXPipeline passes the tables as image_rotary_emb
        mechanism=PassedGridTables(
            argument="image_rotary_emb",
            latent="hidden_states",
            blocks="transformer_blocks",
            latent_dims=(1, 3, 4),  # [batch, frames, channels, height, width]
            patch=lambda c: (c.patch_size_t, c.patch_size, c.patch_size),
            # get_3d_rotary_pos_embed's split: frames D/4, rows and columns 3D/8 each
            axes_dims=lambda c: (c.attention_head_dim // 4, c.attention_head_dim // 8 * 3, c.attention_head_dim // 8 * 3),
            theta=10000.0,
            refusal=_cogvideox_refusal,
            probe=_cogvideox_probe,
        ),
        # 768 x 1360 px at 16 px per token (VAE 8, patch 2): CogVideoX 1.5's training resolution (its model card).
        # The pipeline's default size, sample_height x sample_width x 8, is the cap of its position table (the
        # "slice" grid's max_size), not the training size.
        base_grid=(48, 85),
        pixels_per_token=16,
        # CogVideoXPipeline passes the DDIM / DPM scheduler's integer timestep, 999 .. 0
        time=Time(argument="timestep", divide_by=1000.0),
        rescaled_axes=(1, 2),
        title="CogVideoX 1.5",
        note="tables passed by the pipeline (image_rotary_emb); rows and columns rescaled, frames plain",
    )
)


def _allegro_probe(model):
    """AllegroPipeline's own tables (get_3d_rotary_pos_embed_allegro with the model's interpolation scales) of a
    2 x 3 x 4 grid."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    c = model.config
    grid = (2, 3, 4)
    out = get_3d_rotary_pos_embed_allegro(
        embed_dim=c.attention_head_dim, crops_coords=((0, 0), grid[1:]), grid_size=grid[1:], temporal_size=grid[0],
        interpolation_scale=(c.interpolation_scale_t, c.interpolation_scale_h, c.interpolation_scale_w),
        device=next(model.parameters()).device,
    )
    return grid, (out[:3], out[3:])


register_family(
    Family(
        name="allegro",
        classes=("diffusers.models.transformers.transformer_allegro.AllegroTransformer3DModel",),
        module="",  # no RoPE module: AllegroPipeline passes the tables as image_rotary_emb
        mechanism=PassedAxisTables(
            argument="image_rotary_emb",
            latent="hidden_states",
            blocks="transformer_blocks",
            latent_dims=(2, 3, 4),  # [batch, channels, frames, height, width]
            patch=lambda c: (c.patch_size_t, c.patch_size, c.patch_size),
            # get_3d_rotary_pos_embed_allegro: a third of the head per axis
            axes_dims=lambda c: (c.attention_head_dim // 3,) * 3,
            theta=10000.0,
            probe=_allegro_probe,
            position_scale=lambda c: (c.interpolation_scale_t, c.interpolation_scale_h, c.interpolation_scale_w),
        ),
        # 720 x 1280 px at 16 px per token (VAE 8, patch 2): AllegroPipeline's default size, sample_height x
        # sample_width latent pixels (90 x 160) times the VAE factor
        base_grid=(45, 80),
        pixels_per_token=16,
        # AllegroPipeline passes the scheduler's timestep, 999 .. 0
        time=Time(argument="timestep", divide_by=1000.0),
        rescaled_axes=(1, 2),
        title="Allegro",
        note="per-axis tables passed by the pipeline, positions divided by interpolation_scale; rows and columns rescaled",
    )
)

refuse(
    ("diffusers.models.transformers.hunyuan_transformer_2d.HunyuanDiT2DModel",),
    "HunyuanDiTPipeline maps every resolution's latent grid into the same 32 x 32 position box "
    "(get_resize_crop_region_for_grid with base_size 512 // 16, linspace positions): the model was trained on "
    "such resolution-normalised positions, which never leave the trained range, so there is no extrapolation for "
    "DyPE to schedule; a larger image only gets denser positions (see docs/families_passed.md)",
)
refuse(
    ("diffusers.models.transformers.lumina_nextdit2d.LuminaNextDiT2DModel",),
    "LuminaPipeline already rescales Lumina-Next's RoPE with the resolution and the diffusion time (its own "
    "time-aware scaled RoPE: linear interpolation before scaling_watershed, NTK after, by sqrt(area / training "
    "area)), so DyPE would rescale the tables a second time; use the pipeline's scaling_watershed instead",
)


def _cosmos_refusal(config) -> str | None:
    if getattr(config, "extra_pos_embed_type", None) == "learnable":
        # Cosmos 1.0 (Text2World / Video2World): EDMEulerScheduler's timesteps are c_noise = ln(sigma) / 4
        return (
            "Cosmos 1.0 (extra_pos_embed_type='learnable') is called with EDM's c_noise = ln(sigma) / 4 as its "
            "timestep, not a diffusion time in [0, 1]; this row reads the time of Cosmos 2 / 2.5 "
            "(sigma / (sigma + 1), or the flow sigma)"
        )
    return None


register_family(
    Family(
        name="cosmos",
        classes=("diffusers.models.transformers.transformer_cosmos.CosmosTransformer3DModel",),
        module="rope",
        mechanism=AxisThetaGrid(
            axes_dims=lambda m: (m.dim_t, m.dim_h, m.dim_w),
            # CosmosRotaryPosEmbed: 10000 * rope_scale ** (d / (d - 2)) per axis (its NTK factors)
            thetas=lambda m: (10000.0 * m.t_ntk_factor, 10000.0 * m.h_ntk_factor, 10000.0 * m.w_ntk_factor),
            patch=lambda m: m.patch_size,
            refusal=_cosmos_refusal,
        ),
        # 704 x 1280 px at 16 px per token (VAE 8, patch 2): the default size of Cosmos2VideoToWorldPipeline and
        # Cosmos2_5_PredictBasePipeline (Cosmos2TextToImagePipeline defaults to 768 x 1360: pass base_grid=(48, 85))
        base_grid=(44, 80),
        pixels_per_token=16,
        # Cosmos 2 passes sigma / (sigma + 1) of its EDM sigmas, Cosmos 2.5 the flow sigma: both in [0, 1], 1 = noise
        time=Time(argument="timestep", divide_by=1.0),
        rescaled_axes=(1, 2),
        title="Cosmos Predict 2 / 2.5",
        note="per-axis NTK-scaled theta; rows and columns rescaled, frames plain",
    )
)


register_family(
    Family(
        name="ltx_video",
        classes=("diffusers.models.transformers.transformer_ltx.LTXVideoTransformer3DModel",),
        module="rope",
        mechanism=CentredCoordinates(),
        # 512 x 704 px at 32 px per token (VAE 32, patch 1): the default size of LTXPipeline,
        # LTXImageToVideoPipeline and LTXConditionPipeline
        base_grid=(16, 22),
        pixels_per_token=32,
        # the LTX pipelines pass FlowMatchEulerDiscreteScheduler's timestep, sigma * 1000 (1000 = noise); per
        # token ([B, S]) in image-to-video and condition pipelines, conditioning tokens lower
        time=Time(argument="timestep", divide_by=1000.0),
        rescaled_axes=(1, 2),
        title="LTX-Video 0.9",
        note="RoPE on centred, normalised coordinates, tables per sample; rows and columns rescaled, frames plain",
    )
)

register_family(
    Family(
        name="ltx2",
        classes=("diffusers.models.transformers.transformer_ltx2.LTX2VideoTransformer3DModel",),
        module="rope",  # the video self-attention's; audio_rope, cross_attn_rope, cross_attn_audio_rope stay stock
        mechanism=PixelMidpointCoordinates(),
        # 512 x 768 px at 32 px per token (VAE 32, patch 1): the default size of LTX2Pipeline,
        # LTX2ImageToVideoPipeline, LTX2ConditionPipeline and LTX2InContextPipeline
        base_grid=(16, 24),
        pixels_per_token=32,
        # the LTX-2 pipelines pass FlowMatchEulerDiscreteScheduler's timestep, sigma * 1000 (1000 = noise): [B] in
        # LTX2Pipeline, per token ([B, S], conditioning, keyframe and reference tokens lower) in the others
        time=Time(argument="timestep", divide_by=1000.0),
        rescaled_axes=(1, 2),
        title="LTX-2",
        note="video RoPE on centred pixel midpoints, interleaved or per-head split tables per sample; rows and "
        "columns rescaled, frames, audio and audio-video cross-attention RoPE plain",
    )
)

# LTX-2's DFR passes set the scheduler to a given list of distilled sigmas (DISTILLED_SIGMA_VALUES, no mu): their
# schedule does not depend on the video's size
keep_scheduler_shift(
    "diffusers.pipelines.ltx2.pipeline_ltx2_dfr.LTX2DFRPipeline",
    "diffusers.pipelines.ltx2.pipeline_ltx2_dfr_temporal_refine.LTX2DFRTemporalRefinePipeline",
)
