"""Family rows over the Qwen-style shapes mechanism (adapters/mechanisms/shapes.py): RoPE modules called with the
images' (frames, rows, columns) that return (image, text) complex tables. Qwen-Image itself keeps its
hand-written adapter (adapters/qwen_image.py, with fused kernels)."""

from __future__ import annotations

from ..mechanisms.shapes import QwenShapes
from ..table import Family, Time, register_family

T = "diffusers.models.transformers."

ROWS = (
    Family(
        name="nucleusmoe-image",
        classes=(T + "transformer_nucleusmoe_image.NucleusMoEImageTransformer2DModel",),
        module="pos_embed",
        # NucleusMoEEmbedRope (scale_rope=True: centred grids) starts the text after the last image's half-extent
        mechanism=QwenShapes(text_after="last"),
        # NucleusMoEImagePipeline: default_sample_size 128 x vae_scale_factor 8 = 1024 px, patch_size 2
        base_grid=(64, 64),
        time=Time("timestep"),  # the pipeline passes timestep / num_train_timesteps
        title="NucleusMoE-Image",
        note="NucleusMoEEmbedRope, centred grid, complex freqs_cis",
    ),
)

for _row in ROWS:
    register_family(_row)
