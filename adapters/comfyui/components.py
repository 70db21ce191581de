"""The replacement for a model method that builds its rotary tables from the token-grid sizes of the images in
the sequence (the generated one first, then reference images), instead of from ids.

JoyImage's `get_rotary_pos_embed_for_components(component_sizes, device)` (comfy/ldm/joyimage/model.py) gives
each component (t, h, w) positions: rows and columns restart at 0, frames continue from the previous component,
and returns EmbedND's rotation matrices [1, L, 1, D/2, 2, 2] (axes t, h, w in order, no batch axis). The
replacement calls the original method and keeps its number on every pair whose axis is not rescaled in this
call, so at or below the base grid it is stock bit for bit. It is a plain callable, not a module: set on the
model (an instance attribute over the method, through a ComfyUI object patch or `dype_rope.patch`), it leaves
the module tree as it was.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan
from dype_rope.rope_formats import rotation_matrices

from .call import CallState, ComfyCall, call_in_flight, one_plan_for_the_call, plan_of


def joyimage(model: nn.Module) -> tuple[tuple[int, ...], float]:
    """((t, h, w) channels, theta) of JoyImage's per-component RoPE: its rope_dim_list and theta."""
    try:
        return tuple(int(d) for d in model.rope_dim_list), float(model.theta)
    except AttributeError:
        raise TypeError(f"{type(model).__name__} has no rope_dim_list / theta (JoyImage's RoPE)") from None


READERS: dict[str, Callable[[nn.Module], tuple[tuple[int, ...], float]]] = {"joyimage": joyimage}


def component_ids(component_sizes, device) -> Tensor:
    """(t, h, w) of every token, components in order, t continuing across them: [L, 3]."""
    parts, t0 = [], 0
    for t, h, w in component_sizes:
        axes = (torch.arange(t0, t0 + t, device=device), torch.arange(h, device=device), torch.arange(w, device=device))
        parts.append(torch.cartesian_prod(*axes).reshape(-1, 3))
        t0 += t
    return torch.cat(parts).to(torch.float32)


class DyPEComponentsEmbed:
    """(component_sizes, device=None) -> the original method's tables, the rescaled axes' pairs following DyPE."""

    def __init__(
        self,
        original: Callable[..., Tensor],
        state: CallState,
        build_plan: Callable[[ComfyCall, torch.device], RopePlan],
        what: str,
    ) -> None:
        self.original = original
        self._state = state
        self._build_plan = build_plan
        self._what = what

    def __call__(self, component_sizes, device=None, **kwargs: Any) -> Tensor:
        stock = self.original(component_sizes, device=device, **kwargs)
        call = call_in_flight(self._state, self._what)
        if not call.axes:
            return stock
        plan = plan_of(call, stock.device, self._build_plan)
        plan = one_plan_for_the_call(call, plan)  # the tables have no batch axis
        ours = rotation_matrices(component_ids(component_sizes, stock.device).unsqueeze(0), plan)
        keep = torch.ones_like(plan.pair_axis, dtype=torch.bool)
        for axis in call.axes:
            keep = keep & (plan.pair_axis != axis)
        return torch.where(keep.view(-1, 1, 1), stock, ours.reshape(stock.shape).to(stock.dtype))

    def __repr__(self) -> str:
        return f"DyPEComponentsEmbed({self._what})"
