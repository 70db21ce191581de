"""Family rows over the angles mechanism (adapters/mechanisms/angles.py): RoPE modules returning angles, cos and
sin formed in the attention.

Read off the model's diffusers 0.42 code and its pipeline (transformer_ernie_image.py, pipeline_ernie_image.py).
"""

from __future__ import annotations

from dype_rope.pipelines import keep_scheduler_shift

from ..ernie_image import install_attention
from ..mechanisms.angles import Angles
from ..table import Family, Time, register_family

ROWS = (
    Family(
        name="ernie-image",
        classes=("diffusers.models.transformers.transformer_ernie_image.ErnieImageTransformer2DModel",),
        module="pos_embed",
        # ErnieImageEmbedND3: ids (caption length, row, column) for image tokens, (index, 0, 0) for caption tokens;
        # angles [B, L, 1, D]; the attention's rotate_half pairs channel k with k + D/2
        mechanism=Angles(attention=install_attention),
        # ErnieImagePipeline: default height = width = 1024 px; latents of height / vae_scale_factor (16, the
        # FLUX.2 VAE's 2 ** 4 with the pipeline's 2 x 2 patchify) at the transformer's patch_size 1
        base_grid=(64, 64),
        pixels_per_token=16,
        # the pipeline passes the scheduler's timestep (sigma * 1000, 1000 = noise) in the model's dtype
        time=Time("timestep", divide_by=1000.0),
        rescaled_axes=(1, 2),
        title="Ernie-Image",
        note="ErnieImageEmbedND3 angles; YaRN's attention factor on cos / sin in the attention processor",
    ),
)

for _row in ROWS:
    register_family(_row)

# ErnieImagePipeline sets the scheduler's sigmas 1 .. 1/steps and passes no mu: its shift is the scheduler's fixed
# one, the same at every size, so enable() leaves it as it is.
keep_scheduler_shift("diffusers.pipelines.ernie_image.pipeline_ernie_image.ErnieImagePipeline")
