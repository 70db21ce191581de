"""Model classes whose position encoding DyPE cannot rescale meaningfully: not images or videos. `patch()` raises
the reason; `dype-rope models` lists them as refused."""

from __future__ import annotations

from ..table import refuse

T = "diffusers.models.transformers."
AUDIO = (
    "a 1-D RoPE over an audio sequence: DyPE rescales the rows and columns (and frames) of a generated image or "
    "video, and an audio model has none"
)

refuse(
    (
        T + "ace_step_transformer.AceStepTransformer1DModel",
        T + "stable_audio_transformer.StableAudioDiTModel",
        T + "transformer_stable_audio3.StableAudio3DiTModel",
        T + "transformer_longcat_audio_dit.LongCatAudioDiTTransformer",
        T + "transformer_minimax_music3.MiniMaxMusic3Transformer1DModel",
    ),
    AUDIO,
)
refuse(
    (T + "transformer_rfd4_proteina.RFD4ProteinaTransformer",),
    "a protein-structure model: its positions are residues along a chain, not an image grid DyPE could rescale",
)

# SanaWMLTX2Refiner (SANA-WM stage 2, pipelines/sana_wm/refiner.py) refines block_size latent frames at a time against
# a sliding-window KV cache: after a block's Euler steps it runs the model once more at timestep 0 with
# kv_cache_mode="inject_and_capture_post_rope" and appends that block's keys, stored AFTER the RoPE rotation, to
# the history that every later block's steps (sigma 0.909 .. 0.42) attend to with kv_cache_mode="inject".
refuse(
    (T + "transformer_sana_wm_refiner.SanaWMLTX2RefinerTransformer3DModel",),
    "the Sana-WM refiner attends to a KV cache of keys stored after RoPE: SanaWMLTX2Refiner captures each refined "
    "block's keys already rotated (kv_cache_mode='inject_and_capture_post_rope', at timestep 0) and every later "
    "block's denoising steps attend to them. DyPE changes the rows' and columns' frequencies with the diffusion "
    "time, so the active block's queries would turn by the step's frequencies while the cached keys keep the "
    "rotation of t = 0: the relative positions between the block and its history would be wrong",
)
refuse(
    (T + "transformer_minimax_h3.MiniMaxH3Transformer3DModel",),
    "MiniMax-H3's (t, h, w) positions put every frame on an aspect-normalised grid of fixed area: its pipeline "
    "(modular_pipelines/minimax_h3, _spatial_position_grid) spans each spatial axis over 32 x size / sqrt(rows x "
    "columns) positions (a square canvas covers [0, 32) at any size), so a larger video only samples the same range "
    "more densely; no position leaves the trained range, so there is no extrapolation for DyPE to take over",
)
