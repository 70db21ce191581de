"""Rows of the interleaved multimodal RoPE mechanism (adapters/mechanisms/interleaved_sections.py)."""

from __future__ import annotations

from dype_rope.pipelines import keep_scheduler_shift, patch_also

from ..mechanisms.interleaved_sections import InterleavedSections
from ..table import Family, Time, register_family

register_family(
    Family(
        name="ideogram4",
        classes=("diffusers.models.transformers.transformer_ideogram4.Ideogram4Transformer2DModel",),
        module="rotary_emb",
        # Ideogram4MRoPE keeps only inv_freq; its base is the config's rope_theta. The role argument is the
        # model's `indicator`, OUTPUT_IMAGE_INDICATOR (2) on the generated image's tokens.
        mechanism=InterleavedSections(theta=lambda model: model.config.rope_theta),
        # 2048 x 2048 px, Ideogram4Pipeline's default size, at 16 px per token (AutoencoderKLFlux2's 8 x the
        # pipeline's patch_size 2)
        base_grid=(128, 128),
        pixels_per_token=16,
        # Ideogram4Pipeline passes the model time 1 - sigma in [0, 1] (0 = noise, 1 = clean data), [B]
        time=Time(argument="timestep", divide_by=1.0, reverse=True),
        rescaled_axes=(1, 2),
        title="Ideogram 4",
        note="interleaved (t, h, w) multimodal RoPE, tables per sample; rows and columns rescaled, text axis plain",
    )
)

# Ideogram4Pipeline computes its own resolution-aware schedule (a logit-normal mean shifted by
# 0.5 ln(pixels / 512^2)) and hands the scheduler explicit sigmas: that shift is the pipeline's own, and the
# scheduler's mu must stay unused. Its classifier-free guidance runs a second model, unconditional_transformer,
# on the same image grid: enable() patches it too.
keep_scheduler_shift("diffusers.pipelines.ideogram4.pipeline_ideogram4.Ideogram4Pipeline")
patch_also("diffusers.pipelines.ideogram4.pipeline_ideogram4.Ideogram4Pipeline", "unconditional_transformer")
