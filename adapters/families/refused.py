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
