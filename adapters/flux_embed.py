"""The DyPE position embedding of the FLUX families, apart from their adapters so that the table path (flux.py,
flux2.py) and the fused path (flux_fused.py, flux2_fused.py) both build on it without importing each other."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from dype_rope.rope import RopePlan, rope_tables


class DyPEFluxPosEmbed(nn.Module):
    """Drop-in for FluxPosEmbed: forward(ids [L, n_axes]) -> (cos, sin) [L, D], interleaved, float32."""

    def __init__(self, theta: float, axes_dim, plan_of_call: Callable[[], RopePlan]) -> None:
        super().__init__()
        self.theta = theta
        self.axes_dim = axes_dim
        self._plan_of_call = plan_of_call

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        return rope_tables(ids, self._plan_of_call(), "interleaved")

    def extra_repr(self) -> str:
        return f"theta={self.theta}, axes_dim={list(self.axes_dim)}"
