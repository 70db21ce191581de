"""Family rows over the ids mechanism (adapters/mechanisms/ids.py): RoPE modules mapping position ids to tables.

Each row was read off the model's diffusers 0.42 code and its pipeline: where the module sits, what it returns,
which forward argument carries the generated image's ids, how the pipeline passes the time, and the native size
(the pipeline's default height / width over its pixels per token).
"""

from __future__ import annotations

from ..mechanisms.ids import Ids
from ..table import Family, Time, refuse, register_family

T = "diffusers.models.transformers."
SIGMA = Time("timestep")  # the pipeline passes sigma = timestep / 1000 (1 = noise)
TIMESTEP = Time("timestep", divide_by=1000.0)  # the pipeline passes the scheduler's timestep (1000 = noise)
FLUX_LIKE = Ids("cos_sin_interleaved", image_ids="img_ids")

ROWS = (
    Family(
        name="flux3",
        classes=(T + "transformer_flux3.Flux3Transformer2DModel",),
        module="pos_embed",
        mechanism=FLUX_LIKE,  # ids (T, H, W, L); reference images (image_cond_ids) on later T indices
        # diffusers 0.42 ships no FLUX.3 pipeline: FLUX.2's convention (128 packed channels, 16 px per token) at
        # the FLUX families' 1024 px; the forward takes the flow time in [0, 1] (its docstring)
        base_grid=(64, 64),
        time=SIGMA,
        title="FLUX.3",
        note="Flux3PosEmbed (T, H, W, L), (cos, sin) interleaved",
    ),
    Family(
        name="longcat-image",
        classes=(T + "transformer_longcat_image.LongCatImageTransformer2DModel",),
        module="pos_embed",
        # image ids (1, 512 + row, 512 + column); the edit pipeline's reference image on modality 2
        mechanism=FLUX_LIKE,
        base_grid=(64, 64),  # LongCatImagePipeline: default_sample_size 128 x vae_scale_factor 8 = 1024 px
        time=SIGMA,
        title="LongCat-Image",
        note="LongCatImagePosEmbed, (cos, sin) interleaved; also LongCat-Image-Edit",
    ),
    Family(
        name="ovis-image",
        classes=(T + "transformer_ovis_image.OvisImageTransformer2DModel",),
        module="pos_embed",
        mechanism=FLUX_LIKE,
        base_grid=(64, 64),  # OvisImagePipeline: default_sample_size 128 x vae_scale_factor 8 = 1024 px
        time=SIGMA,
        title="Ovis-Image",
        note="OvisImagePosEmbed, (cos, sin) interleaved",
    ),
    Family(
        name="bria",
        classes=(T + "transformer_bria.BriaTransformer2DModel",),
        module="pos_embed",
        mechanism=FLUX_LIKE,
        base_grid=(64, 64),  # BriaPipeline: default_sample_size 64 x vae_scale_factor 16 = 1024 px
        time=TIMESTEP,  # BriaPipeline passes the scheduler's t itself
        title="Bria",
        note="BriaEmbedND, (cos, sin) interleaved",
    ),
    Family(
        name="bria-fibo",
        classes=(T + "transformer_bria_fibo.BriaFiboTransformer2DModel",),
        module="pos_embed",
        mechanism=FLUX_LIKE,
        # BriaFiboPipeline: default_sample_size 64 x vae_scale_factor 16 = 1024 px, unpatched latents
        base_grid=(64, 64),
        time=TIMESTEP,
        title="Bria-Fibo",
        note="BriaFiboEmbedND, (cos, sin) interleaved",
    ),
    Family(
        name="bria-fibo2",
        classes=(T + "transformer_bria_fibo2.BriaFibo2Transformer2DModel",),
        module="rope_embedder",
        # a plain RopeEmbedder object indexing precomputed complex tables with integer ids (plane, row, column): the
        # image on plane max_num_gist_tokens + 1, context images on the planes after it, gist tokens on planes 1.. at
        # row = column = 0. The model builds the ids itself and embeds the image first: that call sets the scale.
        # Its tables end at axes_lens (512 tokens per side by default): the stock model's limit, and DyPE's.
        mechanism=Ids("complex", image_ids=None, integer_ids=True, axes_attr="axes_dims"),
        base_grid=(64, 64),  # BriaFibo2Pipeline: default_sample_size 128 x vae_scale_factor 8 = 1024 px, patch_size 2
        time=SIGMA,  # the pipeline passes t / 1000, "the noise level in [0, 1]"
        title="Bria-Fibo 2",
        note="RopeEmbedder (plane, row, column), complex freqs_cis",
    ),
    Family(
        name="krea2",
        classes=(T + "transformer_krea2.Krea2Transformer2DModel",),
        module="rotary_emb",
        # position_ids: text at the origin, then the image at (0, row, column)
        mechanism=Ids("cos_sin_interleaved", image_ids="position_ids"),
        base_grid=(64, 64),  # Krea2Pipeline: 1024 px default, vae_scale_factor 8 x patch_size 2
        time=SIGMA,  # the pipeline passes t / num_train_timesteps
        title="Krea 2",
        note="Krea2RotaryPosEmbed, (cos, sin) interleaved",
    ),
    Family(
        name="prx",
        classes=(T + "transformer_prx.PRXTransformer2DModel",),
        module="pe_embedder",
        # the model builds ids (row, column) [B, L, 2] from the latent itself: rotation matrices [B, 1, L, D/2, 2, 2]
        mechanism=Ids("matrices", image_ids=None, frame_axis=False, ids_rank=3),
        # PRXPipeline: DEFAULT_RESOLUTION 512 px; 16 px per token with the FLUX VAE (8x) and patch_size 2
        base_grid=(32, 32),
        rescaled_axes=(0, 1),
        time=SIGMA,  # the pipeline passes t / num_train_timesteps
        title="PRX",
        note="PRXEmbedND (rows, columns), rotation matrices; base grid for the FLUX-VAE checkpoints",
    ),
    Family(
        name="nunchaku-flux",
        classes=(
            "nunchaku.models.transformers.transformer_flux.NunchakuFluxTransformer2dModel",
            "nunchaku.models.transformers.transformer_flux_v2.NunchakuFluxTransformer2DModelV2",
        ),
        module="pos_embed",
        # nunchaku's own EmbedND in Python: [1, 1, L, D/2, 1, 2] holding (sin, cos); the rest is FLUX.1's forward
        mechanism=Ids("sin_cos", image_ids="img_ids"),
        base_grid=(64, 64),  # FLUX.1: 1024 px at 16 px per token
        time=SIGMA,
        title="FLUX.1 (nunchaku)",
        note="nunchaku's quantized FLUX.1, its Python EmbedND, (sin, cos) stacked",
    ),
)

REFUSED = (
    (
        (T + "transformer_omnigen.OmniGenTransformer2DModel",),
        "OmniGen's RoPE is one-dimensional over the flattened sequence (Phi-3's position_ids), so there are no image "
        "rows and columns to rescale; its 2-D position encoding is an absolute sin-cos table added to the latent",
    ),
)

for _row in ROWS:
    register_family(_row)
for _classes, _reason in REFUSED:
    refuse(_classes, _reason)

# Rows of the Qwen-style shapes mechanism (adapters/families/by_shapes.py).
from . import by_shapes  # noqa: E402,F401

# Models that are not images or videos, refused with the reason (adapters/families/refused.py).
from . import refused  # noqa: E402,F401

# Last: models with an ids-style module but no row are refused with the row to declare.
from ..mechanisms import ids_unknown  # noqa: E402,F401
