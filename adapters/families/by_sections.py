"""The Ideogram 4 row over the interleaved-MRoPE mechanism (adapters/mechanisms/mrope.py)."""

from __future__ import annotations

from dype_rope.pipelines import keep_scheduler_shift, patch_also

from ..mechanisms.mrope import IdsLayout, InterleavedMRope, TokenRole
from ..table import Family, Time, register_family

MODEL = "diffusers.models.transformers.transformer_ideogram4"

register_family(
    Family(
        name="ideogram4",
        classes=(f"{MODEL}.Ideogram4Transformer2DModel",),
        module="rotary_emb",
        mechanism=InterleavedMRope(
            stock=f"{MODEL}.Ideogram4MRoPE",
            sections="mrope_section",
            # Ideogram4MRoPE keeps only inv_freq; its base is the config's rope_theta (the mechanism's default).
            # The scale comes from the tokens whose `indicator` is OUTPUT_IMAGE_INDICATOR (2): the generated image.
            scale=TokenRole("indicator", 2),
            ids=IdsLayout(axes_first=False, device_dtype=False),  # forward(position_ids [B, L, 3])
        ),
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
