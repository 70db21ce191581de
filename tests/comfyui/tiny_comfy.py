"""Tiny random-weight ComfyUI diffusion models for integration tests.

Usage (after ComfyUI's folder is on sys.path):

    import tiny_comfy
    comfy = tiny_comfy.import_comfy("/path/to/comfyui")   # once per process (slow: 20-60 s)
    patcher, positive, negative = tiny_comfy.build("flux", seed=0)
    latent = tiny_comfy.latent("flux", rows=16, cols=16)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    out = comfy.sample.sample(patcher, noise, 4, 1.0, "euler", "simple", positive, negative, latent, seed=0)

Every family is one row of FAMILIES. A row names the supported_models config class, the tiny
unet_config, the latent layout (channels, patch size, 4-D image or 5-D video latent) and how to
make its conditioning by hand. Reference-image families (flux_kontext, flux2, qwen_image_edit,
...) take `refs=[(rows, cols), ...]` token grids and an optional `ref_method`.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import torch

_CPU = torch.device("cpu")


def import_comfy(comfy_root: str, threads: int | None = 1, pytorch_attention: bool = True):
    """Import ComfyUI in CPU mode and return the `comfy` package (idempotent: the first call decides).

    threads: torch.set_num_threads value. On a small shared machine one thread is ~50x faster
    for these tiny models than torch's default (oversubscribed cores); None leaves torch's default.
    pytorch_attention: like --use-pytorch-cross-attention (SDPA). Without it ComfyUI on a CPU picks
    attention_sub_quad, which asks psutil for free memory inside every attention call: a
    torch.compile graph break per call.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    if comfy_root not in sys.path:
        sys.path.insert(0, comfy_root)
    import comfy.options
    comfy.options.enable_args_parsing(False)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    if pytorch_attention:
        comfy.cli_args.args.use_pytorch_cross_attention = True
    import comfy.supported_models  # noqa: F401
    import comfy.model_patcher  # noqa: F401
    import comfy.sample  # noqa: F401
    import comfy.samplers  # noqa: F401
    return sys.modules["comfy"]


@dataclasses.dataclass(frozen=True)
class Family:
    config: str                 # comfy.supported_models class name
    unet_config: dict
    channels: int               # latent channels (what comfy.sample.sample gets)
    patch: int                  # spatial patch size: latent pixels per token side
    video: bool                 # 5-D latent (b, c, frames, h, w) instead of 4-D (b, c, h, w)
    txt_dim: int                # width of the hand-made text embedding
    txt_len: int = 7
    extra: Callable[[torch.Generator], dict] | None = None   # extra conditioning keys
    ref_method: str | None = None   # default reference_latents_method for *_edit rows
    refs: tuple = ()            # default reference token grids for *_edit rows
    adapter: str | None = None  # the dype_rope ComfyUI family (adapters/comfyui/families.py) it belongs to
    pixels_per_token: int = 16  # image pixels per token side: VAE downscale x patch (Wan 2.2 5B: 16 x 2)
    id_scale: tuple[float, float] = (1.0, 1.0)  # the model divides its row / col ids by these (Kandinsky 5: 2, 2)
    layout: str = "pairs"  # how the embedder arranges its rotation matrices (test_comfy_contract.LAYOUTS)
    grid: bool = False  # the embedder builds its tables from the embedded latent's shape (Cosmos)
    components: bool = False  # a model method builds the tables from the components' (t, h, w) sizes (JoyImage)
    # run the torch.compile graph-count check (rows whose embedder is another row's mechanism unchanged skip it)
    compile_check: bool = True
    time: str = "sigma"  # "rflow": DyPE's t is the model_sampling's timestep(sigma) (Cosmos' rectified flow)
    # a model method builds tables of its own layout, checked by tests/comfyui/method_tables.py ("ltx", "cogvideox")
    tables: str | None = None

    def rope(self, embedder) -> tuple[list[int], float]:
        """(pairs per axis x 2, theta) of the row's RoPE: an EmbedND's own attributes, or for Cosmos'
        VideoRopePosition3DEmb ComfyUI's formulas restated from the config (dim_h = head // 6 * 2, dim_t the rest;
        theta = 10000 * ratio ** (dim_h / (dim_h - 2)))."""
        if self.components:  # the config's own values (its unet_extra_config overrides the unet_config)
            import comfy.supported_models

            config = dict(self.unet_config) | getattr(comfy.supported_models, self.config).unet_extra_config
            return list(config["rope_dim_list"]), float(config["theta"])
        if not self.grid:
            return [int(d) for d in embedder.axes_dim], float(embedder.theta)
        head = self.unet_config["model_channels"] // self.unet_config["num_heads"]
        dim_h = head // 6 * 2
        ratio = self.unet_config["rope_h_extrapolation_ratio"]
        return [head - 2 * dim_h, dim_h, dim_h], 10000.0 * ratio ** (dim_h / (dim_h - 2))


def _flux_extra(g):
    return {"pooled_output": torch.randn(1, 32, generator=g), "guidance": 3.5}


def _pooled_only(g):
    return {"pooled_output": torch.randn(1, 32, generator=g)}


def _none(g):
    return {}


_FLUX = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32,
             hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1,
             axes_dim=[8, 12, 12], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
             txt_ids_dims=[])

# FLUX.2 as model_detection builds it (4 rope axes, theta 2000, index refs scaled by 10,
# caption index on axis 3), scaled down. Klein = the same class without guidance_embed.
_FLUX2 = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=32,
              hidden_size=64, mlp_ratio=3.0, num_heads=2, depth=1, depth_single_blocks=1,
              axes_dim=[8, 8, 8, 8], theta=2000, patch_size=1, qkv_bias=False, guidance_embed=True,
              txt_ids_dims=[3], global_modulation=True, mlp_silu_act=True, ops_bias=False,
              default_ref_method="index", ref_index_scale=10.0)

_QWEN = dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16, num_layers=1,
             attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32,
             pooled_projection_dim=32, axes_dims_rope=(8, 12, 12))

_WAN21 = dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16,
              dim=64, ffn_dim=64, freq_dim=256, text_dim=32, out_dim=16, num_heads=2, num_layers=1,
              window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)

_WAN22 = dict(_WAN21, in_dim=48, out_dim=48)

_CHROMA = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=32, hidden_size=64,
               mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 12, 12], theta=10000,
               patch_size=2, qkv_bias=True, in_dim=64, out_dim=64, hidden_dim=32, n_layers=1, txt_ids_dims=[],
               vec_in_dim=None)

# Chroma Radiance: pixel space (3 channels), 16 x 16 px patches, a small per-pixel NeRF head.
_CHROMA_RADIANCE = dict(_CHROMA, image_model="chroma_radiance", in_channels=3, out_channels=3, patch_size=16,
                        nerf_hidden_size=16, nerf_mlp_ratio=2, nerf_depth=1, nerf_max_freqs=4, nerf_tile_size=0,
                        nerf_final_head_type="linear", nerf_embedder_dtype=torch.float32, use_x0=False,
                        use_sequential_txt_ids=False)

_LUMINA2 = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64, cap_feat_dim=32, n_layers=1,
                n_refiner_layers=1, n_heads=2, n_kv_heads=2, multiple_of=16, qk_norm=True, axes_dims=[8, 12, 12],
                axes_lens=[300, 512, 512], rope_theta=10000.0, ffn_dim_multiplier=4.0)

# Z-Image as model_detection builds it (theta 256, z_image_modulation, time_scale 1000, tokens padded
# to multiples of 32), scaled down. z_image_modulation needs dim >= 256 (its adaLN input is min(dim, 256)
# wide while the timestep embedder always outputs 256), hence 8 heads of 32.
_ZIMAGE = dict(_LUMINA2, dim=256, n_heads=8, n_kv_heads=8, axes_dims=[8, 12, 12], axes_lens=[1536, 512, 512], rope_theta=256.0,
               ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0, pad_tokens_multiple=32)

_HIDREAM = dict(image_model="hidream", patch_size=2, in_channels=16, out_channels=16, num_layers=1,
                num_single_layers=1, attention_head_dim=32, num_attention_heads=2, caption_channels=[32, 32],
                text_emb_dim=32, num_routed_experts=2, num_activated_experts=1, axes_dims_rope=[16, 8, 8],
                max_resolution=[128, 128], llama_layers=[0, 1])

_HUNYUAN_VIDEO = dict(image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=32,
                      context_in_dim=32, hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1,
                      depth_single_blocks=1, axes_dim=[8, 12, 12], theta=256, patch_size=[1, 2, 2],
                      qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False,
                      use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False)

_KANDINSKY5 = dict(image_model="kandinsky5", in_visual_dim=16, out_visual_dim=16, in_text_dim=32, in_text_dim2=32,
                   time_dim=32, model_dim=64, ff_dim=64, visual_embed_dim=132, patch_size=(1, 2, 2),
                   num_text_blocks=1, num_visual_blocks=1, axes_dims=(8, 12, 12))

_KREA2 = dict(image_model="krea2", features=64, tdim=256, txtdim=32, heads=2, kvheads=2, multiplier=2, layers=1,
              patch=2, channels=16, theta=1e3, txtlayers=2, txtheads=2, txtkvheads=2)


# HunyuanVideo 1.5 as model_detection builds it (patch 1 x 1 x 1, a vision-token input, cond-type embedding,
# meanflow_sum), scaled down; in_channels = 2 x 16 latent channels + mask (its concat_cond fills them)
_HUNYUAN_VIDEO15 = dict(_HUNYUAN_VIDEO, in_channels=33, vec_in_dim=None, patch_size=[1, 1, 1], vision_in_dim=32,
                        use_cond_type_embedding=True, meanflow_sum=True, guidance_embed=False)

# HunyuanImage 2.1: the same class with a 2-D patch and two id axes (model_detection: axes_dim [64, 64])
_HUNYUAN_IMAGE21 = dict(_HUNYUAN_VIDEO, in_channels=64, out_channels=64, vec_in_dim=None, axes_dim=[16, 16],
                        patch_size=[1, 1], guidance_embed=False)

# LongCat-Image: FLUX's class with caption ids on the row and column axes (supported_models.LongCatImage)
_LONGCAT = dict(_FLUX, guidance_embed=False, vec_in_dim=None, txt_ids_dims=[1, 2])

_LENS = dict(image_model="lens", patch_size=2, in_channels=128, out_channels=32, num_layers=1, attention_head_dim=32,
             num_attention_heads=2, enc_hidden_dim=16, axes_dims_rope=(8, 12, 12), selected_layer_index=(0, 1))

_MAGE_FLOW = dict(image_model="mage_flow", in_channels=128, out_channels=128, num_layers=1, attention_head_dim=32,
                  num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(8, 12, 12))

_OMNIGEN2 = dict(image_model="omnigen2", patch_size=2, in_channels=16, hidden_size=64, num_layers=1,
                 num_refiner_layers=1, num_attention_heads=2, num_kv_heads=2, multiple_of=16,
                 axes_dim_rope=(8, 12, 12), text_feat_dim=32)

_BOOGU = dict(image_model="boogu", patch_size=2, in_channels=16, hidden_size=64, num_layers=2,
              num_double_stream_layers=1, num_refiner_layers=1, num_attention_heads=2, num_kv_heads=2, multiple_of=16,
              axes_dim_rope=(8, 12, 12), instruction_feat_dim=32)


_ERNIE = dict(image_model="ernie", hidden_size=64, num_attention_heads=2, num_layers=1, ffn_hidden_size=64,
              in_channels=128, out_channels=128, patch_size=1, text_in_dim=32, rope_theta=256,
              rope_axes_dim=(8, 12, 12))


# Cosmos Predict2 as model_detection builds it (rope3d with the checkpoint's NTK ratios 4, 4, 1, no fps
# modulation), scaled down: heads of 48 channels give the (16, 16, 16) split of VideoRopePosition3DEmb
_COSMOS_P2 = dict(image_model="cosmos_predict2", max_img_h=240, max_img_w=240, max_frames=128, in_channels=16,
                  out_channels=16, patch_spatial=2, patch_temporal=1, concat_padding_mask=True, model_channels=96,
                  num_blocks=1, num_heads=2, crossattn_emb_channels=32, pos_emb_cls="rope3d", pos_emb_learnable=True,
                  pos_emb_interpolation="crop", min_fps=1, max_fps=30, use_adaln_lora=True, adaln_lora_dim=16,
                  extra_per_block_abs_pos_emb=False, rope_h_extrapolation_ratio=4.0, rope_w_extrapolation_ratio=4.0,
                  rope_t_extrapolation_ratio=1.0, rope_enable_fps_modulation=False)
# the image-to-video model: 17 input channels (a mask beside the latent), NTK ratios 3, 3, 1
_COSMOS_P2_I2V = dict(_COSMOS_P2, in_channels=17, rope_h_extrapolation_ratio=3.0, rope_w_extrapolation_ratio=3.0)
_ANIMA = dict(_COSMOS_P2, image_model="anima", crossattn_emb_channels=1024)


# JoyImage: supported_models.JoyImage fixes theta 10000 and rope_dim_list (16, 56, 56), so one head of 128
_JOYIMAGE = dict(image_model="joyimage", patch_size=(1, 2, 2), in_channels=16, out_channels=16, hidden_size=128,
                 num_attention_heads=1, text_dim=32, mlp_width_ratio=1.0, num_layers=1)


# LTXV as model_detection builds it (theta 10000, max_pos [20, 2048, 2048], VAE (8, 32, 32), patch 1), scaled
# down: inner dim 2 x 14 = 28, so 4 pairs per axis, 2 leading identity pairs and 7 pairs per head. The caption
# projection maps to the inner dim, which cross-attention reads (cross_attention_dim = inner dim)
_LTXV = dict(image_model="ltxv", in_channels=128, cross_attention_dim=28, attention_head_dim=14, num_attention_heads=2,
             caption_channels=32, num_layers=1)
# LTX-2: the same video RoPE beside an audio one; the checkpoint's metadata sets "split" tables, float64 frequency
# grids and token midpoints (use_middle_indices_grid), which the tiny model takes to cover those paths. Its text
# connectors are 2 x 16 wide to take the 32-wide caption
_LTXAV = dict(image_model="ltxav", in_channels=128, audio_in_channels=128, cross_attention_dim=28,
              audio_cross_attention_dim=16, attention_head_dim=14, audio_attention_head_dim=8, num_attention_heads=2,
              audio_num_attention_heads=2, caption_channels=32, num_layers=1, connector_attention_head_dim=16,
              connector_num_attention_heads=2, connector_num_layers=1, rope_type="split",
              frequencies_precision="float64", use_middle_indices_grid=True)
# CogVideoX with RoPE (5B-class: model_detection sets use_rotary_positional_embeddings when the checkpoint has no
# pos_embedding), scaled down: heads of 32 give the (8, 12, 12) split of _get_rotary_emb. 1.0: Conv2d patches,
# positions index x 1.875; 1.5: patch_size_t 2, integer positions
_COGVIDEOX = dict(image_model="cogvideox", num_attention_heads=2, attention_head_dim=32, in_channels=16,
                  out_channels=16, time_embed_dim=32, text_embed_dim=32, num_layers=1, use_rotary_positional_embeddings=True,
                  use_learned_positional_embeddings=False)
_COGVIDEOX15 = dict(_COGVIDEOX, patch_size_t=2)


def _text_mask(g):
    # Omnigen2 / Boogu read their caption length (num_tokens) from the text encoder's attention mask
    return {"attention_mask": torch.ones(1, 7, dtype=torch.long)}


def _hidream_extra(g):
    # conditioning_llama3: (batch, llama layers, tokens, width); llama_layers picks one per block.
    return {"pooled_output": torch.randn(1, 32, generator=g),
            "conditioning_llama3": torch.randn(1, 2, 5, 32, generator=g)}


FAMILIES: dict[str, Family] = {
    "flux": Family("Flux", _FLUX, 16, 2, False, 32, extra=_flux_extra, adapter="flux"),
    "flux_kontext": Family("Flux", _FLUX, 16, 2, False, 32, extra=_flux_extra,
                           ref_method=None, refs=((16, 16),), adapter="flux"),
    "flux2": Family("Flux2", _FLUX2, 128, 1, False, 32, extra=lambda g: {"guidance": 4.0}, adapter="flux"),
    "flux2_edit": Family("Flux2", _FLUX2, 128, 1, False, 32, extra=lambda g: {"guidance": 4.0},
                         refs=((16, 16),), adapter="flux"),
    "flux2_klein": Family("Flux2", dict(_FLUX2, guidance_embed=False), 128, 1, False, 32, extra=_none, adapter="flux"),
    "flux2_klein_edit": Family("Flux2", dict(_FLUX2, guidance_embed=False), 128, 1, False, 32, extra=_none,
                               refs=((16, 16),), adapter="flux"),
    "qwen_image": Family("QwenImage", _QWEN, 16, 2, True, 32, extra=_none, adapter="qwen_image"),
    "qwen_image_edit": Family("QwenImage", _QWEN, 16, 2, True, 32, extra=_none, refs=((16, 16),), adapter="qwen_image"),
    "wan21": Family("WAN21_T2V", _WAN21, 16, 2, True, 32, extra=_none, adapter="wan"),
    "wan22": Family("WAN22_T2V", _WAN22, 48, 2, True, 32, extra=_none, adapter="wan", pixels_per_token=32),
    "chroma": Family("Chroma", _CHROMA, 16, 2, False, 32, extra=_none, adapter="chroma"),
    "chroma_radiance": Family("ChromaRadiance", _CHROMA_RADIANCE, 3, 16, False, 32, extra=_none, adapter="chroma"),
    "lumina2": Family("Lumina2", _LUMINA2, 16, 2, False, 32, extra=_none, adapter="lumina2"),
    "z_image": Family("ZImage", _ZIMAGE, 16, 2, False, 32, extra=_none, adapter="lumina2"),
    "hidream": Family("HiDream", _HIDREAM, 16, 2, False, 32, extra=_hidream_extra, adapter="hidream"),
    "hunyuan_video": Family("HunyuanVideo", _HUNYUAN_VIDEO, 16, 2, True, 32, extra=_pooled_only, adapter="hunyuan_video"),
    # ComfyUI's default rope_scale_factor (1, 2, 2): row and col ids halved
    "kandinsky5": Family("Kandinsky5", _KANDINSKY5, 16, 2, True, 32, extra=_pooled_only, adapter="kandinsky5",
                         id_scale=(2.0, 2.0)),
    "kandinsky5_image": Family("Kandinsky5Image", dict(_KANDINSKY5, visual_embed_dim=64), 16, 2, False, 32,
                               extra=_pooled_only, adapter="kandinsky5_image", id_scale=(2.0, 2.0), compile_check=False),
    "krea2": Family("Krea2", _KREA2, 16, 2, True, 64, extra=_none, adapter="krea2"),
    "krea2_edit": Family("Krea2", _KREA2, 16, 2, True, 64, extra=_none, ref_method="index", refs=((16, 16),), adapter="krea2"),
    "hunyuan_video15": Family("HunyuanVideo15", _HUNYUAN_VIDEO15, 16, 1, True, 32, extra=_pooled_only,
                              adapter="hunyuan_video", compile_check=False),
    "hunyuan_image21": Family("HunyuanImage21", _HUNYUAN_IMAGE21, 64, 1, False, 32, extra=_none,
                              adapter="hunyuan_image", pixels_per_token=32),
    "longcat_image": Family("LongCatImage", _LONGCAT, 16, 2, False, 32, extra=_none, adapter="flux", compile_check=False),
    "lens": Family("Lens", _LENS, 128, 1, False, 32, extra=_none, adapter="lens", compile_check=False),
    "mage_flow": Family("MageFlow", _MAGE_FLOW, 128, 1, False, 32, extra=_none, adapter="mage_flow", compile_check=False),
    "mage_flow_edit": Family("MageFlow", _MAGE_FLOW, 128, 1, False, 32, extra=_none, refs=((16, 16),),
                             adapter="mage_flow"),
    "omnigen2": Family("Omnigen2", _OMNIGEN2, 16, 2, False, 32, extra=_text_mask, adapter="omnigen2", compile_check=False),
    "ernie_image": Family("ErnieImage", _ERNIE, 128, 1, False, 32, extra=_none, adapter="ernie_image",
                          layout="ernie"),
    "cosmos_predict2_t2i": Family("CosmosT2IPredict2", _COSMOS_P2, 16, 2, True, 32, extra=_none,
                                  adapter="cosmos_predict2_image", grid=True, time="rflow"),
    "cosmos_predict2_i2v": Family("CosmosI2VPredict2", _COSMOS_P2_I2V, 16, 2, True, 32, extra=_none,
                                  adapter="cosmos_predict2", grid=True, time="rflow", compile_check=False),
    "anima": Family("Anima", _ANIMA, 16, 2, True, 1024, extra=_none, adapter="anima", grid=True, compile_check=False),
    "joyimage": Family("JoyImage", _JOYIMAGE, 16, 2, True, 32, extra=_none, adapter="joyimage", components=True),
    "boogu": Family("Boogu", _BOOGU, 16, 2, False, 32, extra=_text_mask, adapter="omnigen2"),
    "ltxv": Family("LTXV", _LTXV, 128, 1, True, 32, extra=_text_mask, adapter="ltxv", pixels_per_token=32,
                   tables="ltx"),
    "ltxav": Family("LTXAV", _LTXAV, 128, 1, True, 32, extra=_none, adapter="ltxav", pixels_per_token=32,
                    tables="ltx", compile_check=False),
    # 1.0's row and column positions are index x 1.875: ids divided by 1 / 1.875
    "cogvideox": Family("CogVideoX_T2V", _COGVIDEOX, 16, 2, True, 32, extra=_none, adapter="cogvideox",
                        id_scale=(1 / 1.875, 1 / 1.875), time="timestep", tables="cogvideox"),
    "cogvideox15": Family("CogVideoX_T2V", _COGVIDEOX15, 16, 2, True, 32, extra=_none, adapter="cogvideox_15",
                          time="timestep", tables="cogvideox", compile_check=False),

}


def _seed_params(module: torch.nn.Module, seed: int) -> None:
    """ComfyUI builds layers with torch.empty: give every parameter seeded N(0, 0.1^2) values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 0.1)


def make_model(family: str, seed: int = 0):
    """The tiny BaseModel (comfy.model_base.*) with seeded weights, float32, on the CPU."""
    import comfy.supported_models
    fam = FAMILIES[family]
    config = getattr(comfy.supported_models, fam.config)(dict(fam.unet_config))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    _seed_params(model.diffusion_model, seed)
    return model


def latent(family: str, rows: int, cols: int, frames: int = 1) -> torch.Tensor:
    """Zero latent whose image token grid is rows x cols (x frames for 5-D video latents)."""
    fam = FAMILIES[family]
    h, w = rows * fam.patch, cols * fam.patch
    if fam.video:
        return torch.zeros(1, fam.channels, frames, h, w)
    if frames != 1:
        raise ValueError(f"{family} takes 4-D image latents: frames must be 1, got {frames}")
    return torch.zeros(1, fam.channels, h, w)


def conditioning(family: str, seed: int = 0, refs=None, ref_method=None):
    """(positive, negative) lists as comfy.sample.sample expects: [[embedding, {extra keys}]]."""
    fam = FAMILIES[family]
    g = torch.Generator().manual_seed(seed + 1)
    refs = fam.refs if refs is None else refs
    ref_method = fam.ref_method if ref_method is None else ref_method
    out = []
    for _ in range(2):
        emb = torch.randn(1, fam.txt_len, fam.txt_dim, generator=g)
        extra = fam.extra(g) if fam.extra else {}
        if refs:
            extra["reference_latents"] = [torch.randn(latent(family, r, c).shape, generator=g) for r, c in refs]
            if ref_method is not None:
                extra["reference_latents_method"] = ref_method
        out.append([[emb, extra]])
    return out[0], out[1]


def build(family: str, seed: int = 0, refs=None, ref_method=None):
    """(ModelPatcher, positive, negative) for one family; refs: reference token grids [(rows, cols)]."""
    import comfy.model_patcher
    model = make_model(family, seed)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=_CPU, offload_device=_CPU)
    positive, negative = conditioning(family, seed, refs, ref_method)
    return patcher, positive, negative


def sample(comfy, family, patcher, positive, negative, lat, steps=4, cfg=1.0, seed=0,
           sampler="euler", scheduler="simple"):
    noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(patcher, noise, steps, cfg, sampler, scheduler, positive, negative, lat,
                               seed=seed, disable_pbar=True)
