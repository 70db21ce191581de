"""mflux (MLX FLUX, for Apple silicon): `dype_rope.patch(transformer)` on mflux's FLUX.1 and FLUX.2 transformers.

mflux's `Transformer(t, config, hidden_states, ...)` takes the step index `t` and the generation's `Config`;
its RoPE lives in `transformer.pos_embed`, an `EmbedND` mapping ids [B, L, 3] to rotation matrices
[B, 1, L, D/2, 2, 2] in float32. The patch

  * replaces `pos_embed` by a DyPE one (adapters/mflux_embed.py) that calls the original and keeps its numbers
    on every pair whose axis is not stretched: at or below the base grid the model is bit for bit mflux's;
  * swaps the transformer's class for a subclass whose `__call__` reads the call's diffusion time from mflux's
    own scheduler, sigma = config.scheduler.sigmas[t] (1 = noise, as FLUX's sigma), and the image grid from
    config.height / config.width (16 px per token), then calls mflux's own `__call__`.

FLUX.2 (Klein) works the same way with its own time and grid (MfluxFlux2Adapter). Both are undone by handle.remove(): the attribute and the class are put back, nothing else was touched. The
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


MFLUX_FLUX2 = "mflux.models.flux2.model.flux2_transformer.transformer.Flux2Transformer"


@register_adapter(MFLUX_FLUX2)
class MfluxFlux2Adapter(Adapter):
    """mflux's FLUX.2 (Klein): `pos_embed` is a Flux2PosEmbed (ids T/H/W/L -> cos, sin; theta 2000); the time is
    the call's `timestep` (sigma, or sigma * 1000), the grid the extent of its `img_ids` (both read on the device)."""

    name = "mflux-flux2"
    pixels_per_token = 16
    rescaled_axes = (1, 2)
    torch_module = False

    def default_base_grid(self) -> tuple[int, int]:
        return (64, 64)  # 1024 px

    def install(self) -> None:
        from .mflux_embed import install_mflux_flux2

        install_mflux_flux2(self)

    def device_scales(self, spans):
        """Size ratio of each ids axis from the image's spans (an MLX array), without reading them on the host."""
        import mlx.core as mx

        ratios = {a: spans[a] / base for a, base in zip(self.rescaled_axes, self.base_grid)}
        if self.aspect == "isotropic":
            largest = mx.maximum(*ratios.values())
            ratios = {a: largest for a in ratios}
        one = mx.array(1.0, dtype=spans.dtype)
        return mx.stack([ratios.get(a, one) for a in range(spans.shape[0])])
