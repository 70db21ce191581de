"""The Cosmos 3 Omni row over the interleaved-MRoPE mechanism (adapters/mechanisms/mrope.py).
docs/families.md ("Cosmos 3 Omni") says what DyPE's scale means on its joint text + video sequence."""

from __future__ import annotations

from dype_rope.pipelines import keep_scheduler_shift

from ..mechanisms.mrope import GridArgument, IdsLayout, InterleavedMRope
from ..table import Family, Time, register_family

MODEL = "diffusers.models.transformers.transformer_cosmos3"

# Cosmos3OmniPipeline's default 720 x 1280 px (text / image to video), Wan VAE 16x, latent_patch_size 2: 45 x 80
# latents, 23 x 40 patches (the model pads the odd row count up). The pipeline passes the scheduler's timestep
# (1000 = noise) once per noisy vision token, `vision_timesteps`; the model multiplies it by
# config.timestep_scale = 0.001 (checked at install).
register_family(
    Family(
        name="cosmos3_omni",
        classes=(f"{MODEL}.Cosmos3OmniTransformer",),
        module="rotary_emb",
        mechanism=InterleavedMRope(
            stock=f"{MODEL}.Cosmos3VLTextRotaryEmbedding",
            sections="rope_axes_dim",
            # the generated video's patch grid, vision_token_shapes[0]: the prompt never sets the scale
            scale=GridArgument("vision_token_shapes"),
            # forward(position_ids [3, B, N], device, dtype), called by keyword
            ids=IdsLayout(axes_first=True, device_dtype=True),
            # vision_timesteps: one timestep per noisy vision token of the call's one sample
            token_times=True,
            equal_axes=True,  # released [24, 20, 20]
            time_scale="timestep_scale",
        ),
        base_grid=(23, 40),
        pixels_per_token=32,
        time=Time("vision_timesteps", divide_by=1000.0),
        rescaled_axes=(1, 2),
        title="Cosmos 3 Omni",
        note="interleaved MRoPE over text + video; rows' and columns' pairs rescaled for every token",
    )
)

# UniPC flow sigmas set without a resolution shift (set_timesteps(num_inference_steps[, sigmas])).
keep_scheduler_shift("diffusers.pipelines.cosmos.pipeline_cosmos3_omni.Cosmos3OmniPipeline")
