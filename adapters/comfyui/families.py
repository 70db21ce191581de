"""ComfyUI's DiT families as rows of one table: where each keeps its rotary embedder and how its ids are laid out.

A row names the diffusion-model classes (by qualified name: dype_rope never imports ComfyUI), the attribute
path of every EmbedND-style module the model calls, which id axes hold the image's rows and columns, the
native training grid, and whether the model applies ComfyUI's `rope_options` to its image ids. The image's
token grid is read from the latent: ceil(latent size / patch size) on each spatial axis, which is how every
family here pads its latent before patchifying.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ComfyFamily:
    name: str
    classes: tuple[str, ...]  # qualified names of the diffusion-model classes, e.g. "comfy.ldm.flux.model.Flux"
    embedders: tuple[str, ...]  # attribute paths of the rotary embedders under the diffusion model
    id_axes: tuple[int, int]  # the id axes holding the image's rows and columns
    base_grid: tuple[int, int]  # native training grid in tokens (rows, cols)
    pixels_per_token: int = 16  # VAE downscale x patch size
    rope_options: bool = False  # the model stretches its image ids by transformer_options["rope_options"]
    note: str = ""


FAMILIES: tuple[ComfyFamily, ...] = (
    ComfyFamily(
        "flux",
        ("comfy.ldm.flux.model.Flux",),
        ("pe_embedder",),
        (1, 2),
        (64, 64),
        rope_options=True,
        note="FLUX.1 dev / schnell / Fill / Kontext, FLUX.2 and Klein (1024 px)",
    ),
)


def family_by_class() -> dict[str, ComfyFamily]:
    return {cls: fam for fam in FAMILIES for cls in fam.classes}
