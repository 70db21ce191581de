"""The diffusers classes the other row files leave (docs/families.md, "Which models are covered"): ControlNets
that share their transformer's position encoding, matched to that transformer's adapter or row, and refusals
whose reasons are read from each class's own code and its pipeline's. A class whose encoding DyPE could
rescale but that has no row yet is not listed: `dype-rope models` reports it as unknown and `patch()` says so.
"""

from __future__ import annotations

import dataclasses

from . import by_passed  # noqa: F401  (the Cosmos row, which the Cosmos ControlNet's row copies)
from ..base import register_adapter
from ..qwen_image import QwenImageAdapter
from ..zimage import ZImageAdapter
from ..table import FAMILIES, refuse, register_family

T = "diffusers.models.transformers."
C = "diffusers.models.controlnets."

# Kandinsky6SRPipeline cuts the video into overlapping tiles and refines each at the trained tile size the
# model's config names (`tile_sizes`, the one closest to the video's aspect; the low-resolution tile is
# resized to it): a larger output means more tiles, never a larger grid.
refuse(
    (T + "transformer_kandinsky6_sr.Kandinsky6SRTransformer3DModel",),
    "Kandinsky 6 SR is a tiled refiner: Kandinsky6SRPipeline denoises every tile at one of the tile sizes the "
    "model was trained on (transformer.config.tile_sizes) and blends the tiles, so its RoPE grid never exceeds "
    "the training grid and there is no extrapolation for DyPE to schedule; a larger output only adds tiles",
)

# HunyuanDiTControlNetPipeline builds image_rotary_emb exactly as HunyuanDiTPipeline does (base_size 512 // 8 //
# patch_size, get_resize_crop_region_for_grid, linspace positions) and hands the same tables to the ControlNet
# and the transformer: the HunyuanDiT2DModel refusal (by_passed.py) holds for both.
refuse(
    (C + "controlnet_hunyuan.HunyuanDiT2DControlNetModel", C + "controlnet_hunyuan.HunyuanDiT2DMultiControlNetModel"),
    "HunyuanDiT's ControlNet is handed the transformer's own image_rotary_emb: HunyuanDiTControlNetPipeline maps "
    "every resolution's latent grid into the same 32 x 32 position box (get_resize_crop_region_for_grid with "
    "base_size 512 // 16, linspace positions), so positions never leave the trained range and there is no "
    "extrapolation for DyPE to schedule (as for HunyuanDiT2DModel)",
)

# ConsisIDPipeline._prepare_rotary_positional_embeddings: get_resize_crop_region_for_grid into the box of the
# config's sample_height x sample_width, get_3d_rotary_pos_embed with its default grid_type="linspace" (the
# CogVideoX 1.0 scheme, refused for CogVideoX in by_passed.py).
refuse(
    (T + "consisid_transformer_3d.ConsisIDTransformer3DModel",),
    "ConsisID is handed positions its pipeline already interpolates into the training box (ConsisIDPipeline: "
    "get_resize_crop_region_for_grid into sample_height x sample_width, linspace positions, aspect kept, "
    "centred) at every resolution: a static position interpolation that DyPE would stack its own on, not an "
    "extrapolated axis to schedule (as for CogVideoX 1.0); with use_rotary_positional_embeddings=False it has "
    "no RoPE at all (absolute sin-cos embeddings)",
)

# QwenImage21Pipeline (use_kv_cache=True by default, with config.causal_condition) runs the first step with
# kv_cache_mode="extract", storing the text and condition-image keys AFTER apply_rotary_emb_qwen, and every
# later step with "cached", concatenating those stored keys to the target's. DyPE's frequencies change with t
# on every token, so the cached keys would keep the first (noisiest) step's rotation while the target's
# queries and keys follow the schedule down to plain RoPE at t = 0.
refuse(
    (T + "transformer_qwenimage21.QwenImage21Transformer2DModel",),
    "Qwen-Image 2.1 caches its prefix keys after RoPE: QwenImage21Pipeline runs the first denoising step with "
    "kv_cache_mode='extract' (the text and condition-image keys, already rotated) and every later step with "
    "'cached', reusing them. DyPE changes every token's frequencies with the diffusion time, so the cached keys "
    "would stay rotated at the first step's time while the target's follow the schedule: the relative "
    "positions between prefix and target would be wrong at every later step",
)

# The Multi wrappers hold no position encoding: they call each of their nets (self.nets) in turn.
refuse(
    (C + "controlnet_flux.FluxMultiControlNetModel",),
    "FluxMultiControlNetModel has no position encoding of its own: it calls each FluxControlNetModel in its "
    "nets, which dype_rope.patch supports; patch those one by one (dype_rope.patch(multi.nets[i]), together "
    "with the transformer)",
)
refuse(
    (C + "controlnet_qwenimage.QwenImageMultiControlNetModel",),
    "QwenImageMultiControlNetModel has no position encoding of its own: it calls each QwenImageControlNetModel "
    "in its nets, which dype_rope.patch supports; patch those one by one (dype_rope.patch(multi.nets[i]), "
    "together with the transformer)",
)

# -- ControlNets that share their transformer's position encoding ------------------------------------------------

# QwenImageControlNetModel builds its own QwenEmbedRope (scale_rope=True, the transformer's) and calls it as the
# transformer does, pos_embed(img_shapes, max_txt_seq_len, device), with the timestep QwenImageControlNetPipeline
# passes the transformer too (timestep / 1000): the Qwen-Image adapter applies unchanged, so both nets share
# the generated image's scale at every step.
register_adapter(C + "controlnet_qwenimage.QwenImageControlNetModel")(QwenImageAdapter)

# ZImageControlNetModel takes the transformer's RopeEmbedder object itself (ZImageControlNetModel.from_transformer)
# and calls it on the ids its own patchify_and_embed builds (a copy of the transformer's), with the forward
# arguments x, t, patch_size that ZImageControlNetPipeline passes the transformer too ((1000 - t) / 1000): the
# Z-Image adapter applies unchanged. It replaces the ControlNet's attribute only, never the shared object.
register_adapter(C + "controlnet_z_image.ZImageControlNetModel")(ZImageAdapter)

# CosmosControlNetModel builds the transformer's CosmosRotaryPosEmbed (same max_size, patch_size, rope_scale
# arguments) as `rope` and calls it on its control latent, which has the generated latent's frames, height and
# width; Cosmos2_5_TransferPipeline passes it the transformer's timestep (in_timestep: the flow sigma, the
# conditioning frames' own). So it is the Cosmos row on another class; its default size is the transformer's
# too (Cosmos2_5_TransferPipeline: 704 x 1280 px).
_cosmos = next(row for row in FAMILIES if row.name == "cosmos")
register_family(
    dataclasses.replace(
        _cosmos,
        name="cosmos_controlnet",
        classes=(C + "controlnet_cosmos.CosmosControlNetModel",),
        title="Cosmos Transfer 2.5 ControlNet",
        note="the Cosmos row on the ControlNet's own CosmosRotaryPosEmbed",
    )
)
