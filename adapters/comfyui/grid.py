"""The replacement for a module that builds its rotary tables from the token grid's shape instead of from ids.

Cosmos Predict2's `VideoRopePosition3DEmb` (comfy/ldm/cosmos/position_embedding.py) takes the embedded latent
[B, T, H, W, C] and returns EmbedND's rotation matrices [T*H*W, D/2, 2, 2] for positions (t, h, w) = the token's
frame, row and column index, axes in that order, with no batch axis. The replacement always calls the original
and keeps its number on every pair whose axis is not rescaled in this call (the frame axis, whatever its fps
modulation, and every pair at or below the base grid): bit for bit stock there, by construction. The rescaled
pairs take DyPE's frequencies at the same integer positions.

A reader per module kind says what the module holds: its pairs per axis and the theta of the rescaled axes.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan
from dype_rope.rope_formats import rotation_matrices

from .call import CallState, ComfyCall, call_in_flight, one_plan_for_the_call, plan_of


def cosmos_rope3d(module: nn.Module) -> tuple[tuple[int, ...], float]:
    """((dim_t, dim_h, dim_w), theta of the row and column axes) of a VideoRopePosition3DEmb; its NTK factors are
    the checkpoint's own (model_detection sets them per model), so the effective theta is DyPE's base."""
    try:
        dim_h = 2 * int(module.dim_spatial_range.shape[0])
        dim_t = 2 * int(module.dim_temporal_range.shape[0])
        h, w = float(module.h_ntk_factor), float(module.w_ntk_factor)
    except AttributeError:
        raise TypeError(f"{type(module).__name__} is not Cosmos' VideoRopePosition3DEmb") from None
    if h != w:
        raise ValueError(
            f"{type(module).__name__} has different row and column NTK factors ({h}, {w}); DyPE's plan takes one "
            "theta for the rescaled axes"
        )
    return (dim_t, dim_h, dim_h), 10000.0 * h


READERS: dict[str, Callable[[nn.Module], tuple[tuple[int, ...], float]]] = {"cosmos_rope3d": cosmos_rope3d}


class DyPEGridEmbed(nn.Module):
    """forward(x [B, T, H, W, C], ...) -> the original module's tables, the rescaled axes' pairs following DyPE."""

    def __init__(
        self,
        original: nn.Module,
        state: CallState,
        build_plan: Callable[[ComfyCall, torch.device], RopePlan],
        what: str,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a submodule: the module tree stays as it was
        self._state = state
        self._build_plan = build_plan
        self._what = what

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        stock = self.original(x, *args, **kwargs)
        call = call_in_flight(self._state, self._what)
        if not call.axes:
            return stock
        plan = plan_of(call, stock.device, self._build_plan)
        plan = one_plan_for_the_call(call, plan)  # the tables have no batch axis
        _, t, h, w = x.shape[:4]
        grid = torch.meshgrid(*(torch.arange(n, device=stock.device, dtype=torch.float32) for n in (t, h, w)),
                              indexing="ij")
        ids = torch.stack(grid, dim=-1).reshape(1, -1, 3)
        ours = rotation_matrices(ids, plan)[0]  # [T*H*W, D/2, 2, 2]
        keep = torch.ones_like(plan.pair_axis, dtype=torch.bool)
        for axis in call.axes:
            keep = keep & (plan.pair_axis != axis)
        return torch.where(keep.view(-1, 1, 1), stock, ours.reshape(stock.shape).to(stock.dtype))

    def extra_repr(self) -> str:
        return self._what
