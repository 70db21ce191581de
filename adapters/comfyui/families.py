"""ComfyUI's DiT families as rows of one table: where each keeps its rotary embedder and how its ids are laid out.

A row names the diffusion-model classes (by qualified name: dype_rope never imports ComfyUI), the attribute
path of every rotary embedder the model calls, which id axes hold the image's rows and columns, the native
training grid, and whether the model applies ComfyUI's `rope_options` to its image ids. The image's token grid
is read from the latent: ceil(latent size / patch size) on each spatial axis, which is how every family here
pads its latent before patchifying. Video families keep their frame axis (axis 0) as it is.

Most embedders map ids to EmbedND's rotation matrices; a row says so by default, and otherwise names its kind:
a `layout` (the same numbers arranged differently, formats.py), a `grid` reader (tables built from the grid's
shape, grid.py) or a `method` reader (tables built in a model method: from component grid sizes, components.py;
from LTX's pixel coordinates, ltx.py; from CogVideoX's grid size, cogvideox.py).
Several rows may share a class (HunyuanVideo's class also runs HunyuanImage 2.1): `n_axes` (the embedder's axis
count) or `when` (a model attribute) says which row a model is. `time` says how the sampler's sigma gives DyPE's
t (1 = noise): the sigma itself for flow matching, sigma / (sigma + 1) for Cosmos' rectified flow, and for a
discrete DDPM model (CogVideoX) the model's own timestep over 1000. `refusal` refuses a model of a row's class by
its configuration (CogVideoX 2B has no RoPE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class ComfyFamily:
    name: str
    classes: tuple[str, ...]  # qualified names of the diffusion-model classes, e.g. "comfy.ldm.flux.model.Flux"
    embedders: tuple[str, ...]  # attribute paths of the rotary embedders under the diffusion model
    id_axes: tuple[int, int]  # the id axes holding the image's rows and columns
    base_grid: tuple[int, int]  # native training grid in tokens (rows, cols)
    pixels_per_token: int = 16  # VAE downscale x patch size
    rope_options: bool = False  # the model stretches its image ids by transformer_options["rope_options"]
    patch_attr: str = "patch_size"  # the diffusion model's attribute holding its patch size
    patch: int | None = None  # latent pixels per token side where the model patchifies without patch_attr
    n_axes: int | None = None  # this row's embedder has this many id axes (rows sharing a class); None: any
    when: tuple[str, Any] | None = None  # (attribute, value) the model must have for this row (rows sharing a class)
    # the model's own position scale on every id axis, ids divided by it: f(model, latent rows, latent cols)
    id_scale: Callable[[Any, int, int], tuple[float, ...]] | None = None
    layout: str = "pairs"  # how the embedder arranges its rotation matrices (formats.LAYOUTS)
    grid: str | None = None  # the embedder builds its tables from the grid's shape: its reader (grid.READERS)
    method: str | None = None  # the "embedder" is a model method taking component grid sizes: its reader
    time: str = "sigma"  # how the sampler's sigma gives DyPE's t (TIMES)
    sampling: str = "CONST"  # the model_sampling mix-in that time convention belongs to (the node checks it)
    note: str = ""
    # why a model of this row's class cannot be patched, read from its configuration (None: it can)
    refusal: Callable[[Any], str | None] | None = None


# DyPE's t (1 = noise) from ComfyUI's sigma, on the device: plain flow matching (CONST: sigma is the flow
# time), and Cosmos' rectified flow (COSMOS_RFLOW: sigma in [0.002, 80] is t / (1 - t), so t = sigma / (sigma + 1),
# as its ModelSamplingCosmosRFlow.timestep computes it)
TIMES: dict[str, Callable[[Any], Any]] = {
    "sigma": lambda sigma: sigma,
    "rflow": lambda sigma: sigma / (sigma + 1),
    # discrete DDPM models (CogVideoX): the model's own timestep, model_sampling.timestep(sigma) in 0 .. 999 as
    # BaseModel._apply_model passes it, over 1000 (the diffusers row's convention for the same model)
    "timestep": lambda timestep: timestep / 1000,
}


def _cogvideox_id_scale(model: Any, h: int, w: int) -> tuple[float, ...]:
    from .cogvideox import cogvideox_id_scale

    return cogvideox_id_scale(model, h, w)


def _cogvideox_refusal(model: Any) -> str | None:
    from .cogvideox import cogvideox_refusal

    return cogvideox_refusal(model)


def kandinsky5_id_scale(model: Any, h: int, w: int) -> tuple[float, ...]:
    """Kandinsky 5's own scale of its (frame, row, col) ids, as its rope_encode_3d picks it without rope_options:
    the model's rope_scale_factor, and (1, 3.16, 3.16) for the 4096-wide Pro model from 14080 latent pixels."""
    if getattr(model, "model_dim", None) == 4096 and h * w >= 14080:
        return (1.0, 3.16, 3.16)
    return tuple(float(f) for f in model.rope_scale_factor)


FAMILIES: tuple[ComfyFamily, ...] = (
    # FLUX.2 / Klein are the same class with 4 id axes (index, row, col, caption) and 16 px VAE tokens.
    # LongCat-Image is this class too (caption ids on rows and cols, image ids shifted past them by rope_options;
    # its pipeline's default is 1024 px)
    ComfyFamily("flux", ("comfy.ldm.flux.model.Flux",), ("pe_embedder",), (1, 2), (64, 64), rope_options=True,
                note="FLUX.1 dev / schnell / Fill / Kontext, FLUX.2, Klein and LongCat-Image (1024 px)"),
    # Chroma Radiance subclasses Chroma: pixel space, 16 px patches, the same embedder
    ComfyFamily("chroma", ("comfy.ldm.chroma.model.Chroma",), ("pe_embedder",), (1, 2), (64, 64),
                note="Chroma and Chroma Radiance (1024 px)"),
    # image ids centred on the grid; caption ids run on all three axes after the image's half extent
    ComfyFamily("qwen_image", ("comfy.ldm.qwen_image.model.QwenImageTransformer2DModel",), ("pe_embedder",),
                (1, 2), (83, 83), note="Qwen-Image and Qwen-Image-Edit (1328 px)"),
    # caption and image ids are embedded in separate calls (axis 0 = caption index)
    ComfyFamily("lumina2", ("comfy.ldm.lumina.model.NextDiT",), ("rope_embedder",), (1, 2), (64, 64),
                rope_options=True, note="Lumina2 and Z-Image (1024 px)"),
    ComfyFamily("hidream", ("comfy.ldm.hidream.model.HiDreamImageTransformer2DModel",), ("pe_embedder",),
                (1, 2), (64, 64), note="HiDream-I1 (1024 px)"),
    # HunyuanVideo (8 px VAE x 2 px patches) and HunyuanVideo 1.5 (16 px VAE x 1): (frame, row, col) ids,
    # both trained at 720 x 1280 px
    ComfyFamily("hunyuan_video", ("comfy.ldm.hunyuan_video.model.HunyuanVideo",), ("pe_embedder",), (1, 2),
                (45, 80), n_axes=3, note="HunyuanVideo and HunyuanVideo 1.5 (720 x 1280 px)"),
    # the same class with a 2-D patch: (row, col) ids only; 32 px VAE tokens, its pipeline's 2048 px default
    ComfyFamily("hunyuan_image", ("comfy.ldm.hunyuan_video.model.HunyuanVideo",), ("pe_embedder",), (0, 1),
                (64, 64), pixels_per_token=32, n_axes=2, note="HunyuanImage 2.1 (2048 px)"),
    # image tokens only (text goes through cross-attention), ids of batch 1
    # (frame, row, col) ids divided by the model's own rope_scale_factor (2 on rows and cols), or stretched by
    # rope_options instead; the caption's 1-D embedder is left alone. The image model (a FLUX latent in 64-wide
    # visual embeddings) is 1024 px; the video models, its pipeline's 512 x 768 px
    ComfyFamily("kandinsky5_image", ("comfy.ldm.kandinsky5.model.Kandinsky5",), ("rope_embedder_3d",), (1, 2),
                (64, 64), rope_options=True, when=("visual_embed_dim", 64), id_scale=kandinsky5_id_scale,
                note="Kandinsky 5 Image (1024 px)"),
    ComfyFamily("kandinsky5", ("comfy.ldm.kandinsky5.model.Kandinsky5",), ("rope_embedder_3d",), (1, 2), (32, 48),
                rope_options=True, id_scale=kandinsky5_id_scale, note="Kandinsky 5 Video (512 x 768 px)"),
    # ids -> tables like EmbedND (float64 angles, float32 out), its pairs arranged for split-half attention:
    # (index, row, col) ids, caption index on axis 0 only; FLUX.2 latent pixels as tokens; 1024 px default
    ComfyFamily("ernie_image", ("comfy.ldm.ernie.model.ErnieImageModel",), ("pos_embed",), (1, 2), (64, 64),
                rope_options=True, layout="split_half_rows", note="Ernie-Image (1024 px)"),
    # Cosmos Predict2 builds its tables from the grid's shape (VideoRopePosition3DEmb: frame, row, col) with the
    # checkpoint's own NTK factors; rectified-flow sigma. Its text-to-image model (16 input channels) defaults to
    # 768 x 1360 px, its video-to-world model to 704 x 1280 px. Anima subclasses it and samples as plain flow;
    # it publishes no default resolution (1024 px here)
    ComfyFamily("anima", ("comfy.ldm.anima.model.Anima",), ("pos_embedder",), (1, 2), (64, 64),
                patch_attr="patch_spatial", grid="cosmos_rope3d", note="Anima (1024 px)"),
    ComfyFamily("cosmos_predict2_image", ("comfy.ldm.cosmos.predict2.MiniTrainDIT",), ("pos_embedder",), (1, 2),
                (48, 85), patch_attr="patch_spatial", grid="cosmos_rope3d", time="rflow", sampling="COSMOS_RFLOW",
                when=("in_channels", 16), note="Cosmos Predict2 text-to-image (768 x 1360 px)"),
    ComfyFamily("cosmos_predict2", ("comfy.ldm.cosmos.predict2.MiniTrainDIT",), ("pos_embedder",), (1, 2),
                (44, 80), patch_attr="patch_spatial", grid="cosmos_rope3d", time="rflow", sampling="COSMOS_RFLOW",
                note="Cosmos Predict2 video-to-world (704 x 1280 px)"),
    # a model method builds the tables per image component from its (t, h, w) token grid: the generated image
    # first, then references (rows and cols restart at 0, frames continue); Wan 2.1 latent, 2 x 2 patches;
    # JoyImage-Edit's pipeline defaults to 1024 px
    ComfyFamily("joyimage", ("comfy.ldm.joyimage.model.JoyImageTransformer3DModel",),
                ("get_rotary_pos_embed_for_components",), (1, 2), (64, 64), method="joyimage",
                note="JoyImage (1024 px)"),
    ComfyFamily("wan", ("comfy.ldm.wan.model.WanModel",), ("rope_embedder",), (1, 2), (30, 52), rope_options=True,
                note="Wan 2.1 / 2.2 and their variants (480 x 832 px)"),
    ComfyFamily("krea2", ("comfy.ldm.krea2.model.SingleStreamDiT",), ("pe_embedder",), (1, 2), (64, 64),
                patch_attr="patch", note="Krea 2 (1024 px)"),
    # (frame, row, col) ids centred on the grid like Qwen-Image's, caption ids after them on all three axes;
    # tokens are the FLUX.2 latent's pixels (no patchify although the model keeps a patch_size of 2)
    ComfyFamily("lens", ("comfy.ldm.lens.model.LensTransformer2DModel",), ("pos_embed",), (1, 2), (64, 64),
                patch=1, note="Lens (1024 px)"),
    # centred (index, row, col) ids, reference latents on index 1, 2, ...; FLUX.2 latent pixels as tokens
    ComfyFamily("mage_flow", ("comfy.ldm.mage_flow.model.MageFlowTransformer2DModel",), ("pe_embedder",), (1, 2),
                (64, 64), note="MageFlow (1024 px)"),
    # the EmbedND inside OmniGen2RotaryPosEmbed: (index, row, col) ids, caption index on all three axes
    ComfyFamily("omnigen2", ("comfy.ldm.omnigen.omnigen2.OmniGen2Transformer2DModel",
                             "comfy.ldm.boogu.model.BooguTransformer2DModel"), ("rope_embedder.rope_embedder",),
                (1, 2), (64, 64), note="OmniGen2 and Boogu (1024 px)"),
    # LTXV and LTX-2 build their video tables in a model method from pixel coordinates (adapters/comfyui/ltx.py):
    # (frame, row, col) coordinates, 32 px VAE tokens (patch 1). Native grid: 512 x 768 px, the default of
    # ComfyUI's EmptyLTXVLatentVideo (and of diffusers' LTX2Pipeline); flow sigma. LTX-2's audio tables stay stock
    ComfyFamily("ltxv", ("comfy.ldm.lightricks.model.LTXVModel",), ("_prepare_positional_embeddings",), (1, 2),
                (16, 24), pixels_per_token=32, patch=1, method="ltx", note="LTXV (512 x 768 px)"),
    ComfyFamily("ltxav", ("comfy.ldm.lightricks.av_model.LTXAVModel",), ("_prepare_positional_embeddings",),
                (1, 2), (16, 24), pixels_per_token=32, patch=1, method="ltxav", note="LTX-2 (512 x 768 px)"),
    # CogVideoX builds (cos, sin) per axis in a model method from the token grid's size (adapters/comfyui/
    # cogvideox.py); v-prediction DDPM: DyPE's t is the model's own timestep / 1000. CogVideoX 1.5 (patch_size_t
    # set): its sample_height x sample_width default of 96 x 170 latent px (supported_models.CogVideoX_T2V),
    # 768 x 1360 px; CogVideoX 1.0 (5B): the model's 60 x 90 default, 480 x 720 px, row / col positions
    # index x spatial_interpolation_scale. 2B checkpoints (no RoPE) are refused by their configuration
    ComfyFamily("cogvideox_15", ("comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel",), ("_get_rotary_emb",),
                (1, 2), (48, 85), when=("patch_size_t", 2), method="cogvideox", id_scale=_cogvideox_id_scale,
                time="timestep", sampling="ModelSamplingDiscrete", refusal=_cogvideox_refusal,
                note="CogVideoX 1.5 (768 x 1360 px)"),
    ComfyFamily("cogvideox", ("comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel",), ("_get_rotary_emb",),
                (1, 2), (30, 45), when=("patch_size_t", None), method="cogvideox", id_scale=_cogvideox_id_scale,
                time="timestep", sampling="ModelSamplingDiscrete", refusal=_cogvideox_refusal,
                note="CogVideoX 1.0 5B (480 x 720 px); 2B refused (no RoPE)"),
    # Ideogram 4: no rotary module; `_backbone` builds interleaved (t, h, w) multimodal tables from position_ids[0]
    # and hands them to every block (ideogram4.py replaces `_backbone` and each block's forward). One token per
    # Flux2 latent pixel (16 px); 2048 x 2048 px, the diffusers Ideogram4Pipeline's default size (ComfyUI sets none)
    ComfyFamily("ideogram4", ("comfy.ldm.ideogram4.model.Ideogram4Transformer2DModel",), ("_backbone",), (1, 2),
                (128, 128), patch=1, method="ideogram4", note="Ideogram 4 (2048 px)"),
)
