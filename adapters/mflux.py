"""mflux (MLX FLUX, for Apple silicon): `dype_rope.patch(transformer)` on mflux's FLUX.1 transformer.

mflux's `Transformer(t, config, hidden_states, ...)` takes the step index `t` and the generation's `Config`;
its RoPE lives in `transformer.pos_embed`, an `EmbedND` mapping ids [B, L, 3] to rotation matrices
[B, 1, L, D/2, 2, 2] in float32. The patch

  * replaces `pos_embed` by a DyPE one (adapters/mflux_embed.py) that calls the original and keeps its numbers
    on every pair whose axis is not stretched: at or below the base grid the model is bit for bit mflux's;
  * swaps the transformer's class for a subclass whose `__call__` reads the call's diffusion time from mflux's
    own scheduler, sigma = config.scheduler.sigmas[t] (1 = noise, as FLUX's sigma), and the image grid from
    config.height / config.width (16 px per token), then calls mflux's own `__call__`.

Both are undone by handle.remove(): the attribute and the class are put back, nothing else was touched. The
model is matched by qualified class name, so nothing here imports mlx or mflux until a model of theirs is
patched. Computation stays on MLX arrays in float32 (the precision of mflux's tables, and the one MLX's GPU has).
"""

from __future__ import annotations

from .base import Adapter, register_adapter

MFLUX_FLUX = "mflux.models.flux.model.flux_transformer.transformer.Transformer"


@register_adapter(MFLUX_FLUX)
class MfluxFluxAdapter(Adapter):
    name = "mflux-flux"
    pixels_per_token = 16
    rescaled_axes = (1, 2)
    torch_module = False  # an MLX model: patch() takes it although it is no torch.nn.Module

    def default_base_grid(self) -> tuple[int, int]:
        return (64, 64)  # 1024 px, FLUX's training size

    def install(self) -> None:
        from .mflux_embed import install_mflux

        install_mflux(self)

    def axis_ratios(self, grid: tuple[int, int]) -> tuple[float, float, float]:
        """Size ratio of each ids axis (frame, row, column) for an image of `grid` tokens: host numbers."""
        ratios = [g / b for g, b in zip(grid, self.base_grid)]
        if self.aspect == "isotropic":
            ratios = [max(ratios)] * 2
        return (1.0, *ratios)
