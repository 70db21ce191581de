"""SD3 / SD3.5: diffusers' SD3Transformer2DModel, whose PatchEmbed adds an absolute 2D sin-cos embedding.

The stock embedding is a stored M x M grid (M = pos_embed_max_size, 96) whose positions advance by
base_size / M per token (base_size = sample_size / patch_size, 64: the 96 stored tokens cover the positions a
64-token image spans at spacing 1, so a 1024 px image at spacing 2/3 covers the band [10.7, 52.7]). An image
of n tokens per side takes the centred crop starting at (M - n) // 2, and diffusers raises beyond M.

DyPE keeps that layout for every size: the crop start formula extends below 0 and past M, so a larger image
keeps the model's spacing and centring, and the rescaled sin-cos frequencies (dype_rope.sincos) act around the
stored grid's centre. At or below the base grid, and whenever no axis is rescaled and the image fits the
stored grid, the stock crop itself runs, bit for bit.

The replacement is the smallest one possible: the PatchEmbed instance gets its own `cropped_pos_embed`. The
stored buffer and the projection stay owned by that one module, so `.to()`, `state_dict()` and diffusers'
layerwise-casting hooks (which match the name "pos_embed") keep acting on the same tensors; remove() deletes
the instance attribute and the class method shows through again.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dype_rope.rope import freq_dtype
from dype_rope.sincos import axis_sincos, grid_sincos, sincos_frequencies, sincos_plain
from dype_rope.timestep import diffusion_times

from .base import Adapter, register_adapter

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.embeddings import PatchEmbed
    from diffusers.models.transformers.transformer_sd3 import SD3Transformer2DModel
except ImportError:  # pragma: no cover - exercised only without diffusers
    PatchEmbed = SD3Transformer2DModel = None

SD3_TIMESTEP_RANGE = 1000.0  # the pipeline passes sigma * num_train_timesteps


def stored_grid_positions(
    start: int, n: int, max_size: int, base_size: int, interpolation_scale: float, device
) -> Tensor:
    """Positions of stored-grid rows start .. start + n - 1 (float32), by diffusers' own expression.

    Rows outside [0, max_size) continue the same arithmetic progression, so a grid larger than the stored one
    keeps the spacing and centring the model was trained with; inside it the values equal the stored ones bit
    for bit (integer row indices are exact in float32).
    """
    rows = torch.arange(start, start + n, dtype=torch.float32, device=device)
    return rows / (max_size / base_size) / interpolation_scale


@register_adapter(*(c for c in (SD3Transformer2DModel,) if c is not None))
class SD3Adapter(Adapter):
    name = "sd3"
    pixels_per_token = 16  # VAE factor 8, 2 x 2 patches
    rescaled_axes = (0, 1)  # rows, columns

    def default_base_grid(self) -> tuple[int, int]:
        embed = self.model.pos_embed
        # PatchEmbed was built for sample_size latent pixels: the training resolution (128 -> 64 tokens, 1024 px).
        return (int(embed.height), int(embed.width))

    def install(self) -> None:
        model = self.model
        embed = model.pos_embed
        if not (PatchEmbed is not None and isinstance(embed, PatchEmbed)):
            raise TypeError(f"{type(model).__name__}.pos_embed is {type(embed).__name__}, not PatchEmbed")
        if "cropped_pos_embed" in vars(embed):
            raise RuntimeError(
                f"{type(model).__name__}.pos_embed already carries a DyPE embedding (a copy of a patched model?)"
            )
        if embed.pos_embed is None or not embed.pos_embed_max_size:
            raise TypeError(
                "the SD3 adapter needs a PatchEmbed with a stored sin-cos grid (pos_embed_type='sincos' and "
                f"pos_embed_max_size set); this one has pos_embed_max_size={embed.pos_embed_max_size!r}"
            )
        channels = embed.pos_embed.shape[-1] // 2
        if channels % 2:
            raise ValueError(f"a 2D sin-cos embedding needs a multiple of 4 channels, got {2 * channels}")
        max_size, base_size = int(embed.pos_embed_max_size), int(embed.base_size)
        interp = float(embed.interpolation_scale)
        spacing = 1.0 / (max_size / base_size) / interp
        centre = (max_size - 1) / 2 * spacing  # the centre of every crop with an even margin
        extents = [g * spacing for g in self.base_grid]
        stock_crop = type(embed).cropped_pos_embed.__get__(embed)
        cfg = self.cfg

        def cropped_pos_embed(height: int, width: int) -> Tensor:
            h, w = height // embed.patch_size, width // embed.patch_size
            ratios = [h / self.base_grid[0], w / self.base_grid[1]]
            if self.aspect == "isotropic":
                ratios = [max(ratios)] * 2
            rescaled = [r > 1 for r in ratios]
            if not any(rescaled) and h <= max_size and w <= max_size:
                return stock_crop(height, width)
            buffer = embed.pos_embed
            dtype = freq_dtype(buffer.device)
            plain = sincos_plain(channels, torch.empty(0, dtype=dtype, device=buffer.device))
            t = None
            if any(rescaled):
                step = self.step
                if step.timestep is None:
                    raise self.outside_forward()
                # one set of frequencies per sample: the embedding is added to the latent [B, HW, D], so a
                # batch [B, HW, D] broadcasts as the stock [1, HW, D] does, and a batch may mix times
                t = diffusion_times(step.timestep, divide_by=SD3_TIMESTEP_RANGE, dtype=dtype, device=buffer.device)
                step.t = t
                step.scales = torch.stack([torch.full((), r, dtype=dtype, device=buffer.device) for r in ratios])
            per_axis = []
            for n, ratio, extent in zip((h, w), ratios, extents):
                pos = stored_grid_positions((max_size - n) // 2, n, max_size, base_size, interp, buffer.device)
                omega = None
                if ratio > 1:
                    scale = torch.full((), ratio, dtype=dtype, device=buffer.device)  # filled on the device
                    omega = sincos_frequencies(channels, extent, scale, t, cfg)
                per_axis.append(axis_sincos(pos, plain, omega, centre))
            table = grid_sincos(*per_axis).to(buffer.dtype)
            return table if table.dim() == 3 else table.unsqueeze(0)  # [B, HW, D] per sample, else [1, HW, D]

        embed.cropped_pos_embed = cropped_pos_embed
        self.on_remove(lambda: delattr(embed, "cropped_pos_embed"))
        self.hook_calls(self.capture("timestep"))
