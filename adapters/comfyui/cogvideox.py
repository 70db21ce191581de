"""The replacement for the method of ComfyUI's CogVideoX that builds its rotary tables from the token grid's size.

`CogVideoXTransformer3DModel._get_rotary_emb(h, w, t, device)` (comfy/ldm/cogvideo/model.py) returns (cos, sin)
[T*H*W, head_dim] for positions (frame, row, col) in (t h w) order: per axis a block of channels (head_dim / 4
frames, 3 head_dim / 8 rows, 3 head_dim / 8 columns), each pair's value twice (interleaved pairs), theta 10000.
CogVideoX 1.5 (`patch_size_t` set) takes the token's index as its row and column position; CogVideoX 1.0 the index
times `spatial_interpolation_scale` (1.875 by default): ComfyUI keeps no training box, so the positions grow with
the grid as integer multiples of that step, which the row counts as an id scale (its extents (n - 1) x 1.875 + 1).

The replacement calls the method and keeps its number on every pair whose axis is not rescaled in the call
(frames always; rows and columns at or below the base grid): stock bit for bit there. The tables have no batch
axis: one plan per call, the first sample's (ComfyUI gives every sample of a call the same sigma). At install the
method is called on a small grid and must return this layout, else the patch is refused.

Checkpoints without RoPE (CogVideoX 2B: `use_rotary_positional_embeddings=False`, sin-cos positions added to the
tokens) are refused by `refusal` when patched: the class is the same, the configuration decides.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan, rope_tables

from .call import CallState, ComfyCall, call_in_flight, one_plan_for_the_call, plan_of

THETA = 10000.0  # _get_1d_rotary_pos_embed's default, which _get_rotary_emb never overrides


def step(model: nn.Module) -> float:
    """The row / column position step per token: 1 for CogVideoX 1.5, spatial_interpolation_scale for 1.0."""
    return 1.0 if getattr(model, "patch_size_t", None) is not None else float(model.spatial_interpolation_scale)


def cogvideox(model: nn.Module) -> tuple[tuple[int, ...], float]:
    """((frame, row, col) channels, theta) of _get_rotary_emb: head_dim / 4 and 3 head_dim / 8 twice."""
    try:
        d = int(model.attention_head_dim)
    except (AttributeError, TypeError, ValueError):
        raise TypeError(f"{type(model).__name__} has no attention_head_dim (CogVideoX's RoPE)") from None
    return (d // 4, d // 8 * 3, d // 8 * 3), THETA


def cogvideox_id_scale(model: Any, h: int, w: int) -> tuple[float, ...]:
    """The divisor of the (frame, row, col) positions: 1 / step on rows and columns (families.ComfyFamily)."""
    return (1.0, 1.0 / step(model), 1.0 / step(model))


def cogvideox_refusal(model: Any) -> str | None:
    if not getattr(model, "use_rotary_positional_embeddings", False):
        return (
            "this CogVideoX checkpoint has no RoPE (use_rotary_positional_embeddings=False, as ComfyUI detects "
            "CogVideoX 2B from its patch_embed.pos_embedding): its positions are absolute sin-cos embeddings added "
            "to the tokens, with no frequencies for DyPE to rescale"
        )
    return None


def grid_positions(h: int, w: int, t: int, row_step: float, device, dtype=torch.float64) -> Tensor:
    """(frame, row, col) position of every token in (t h w) order: [1, T*H*W, 3]."""
    axes = (torch.arange(t, device=device, dtype=dtype), torch.arange(h, device=device, dtype=dtype) * row_step,
            torch.arange(w, device=device, dtype=dtype) * row_step)
    return torch.cartesian_prod(*axes).reshape(1, -1, 3)


class DyPECogVideoXEmbed:
    """(h, w, t, device) -> the method's (cos, sin), the rescaled axes' pairs following DyPE."""

    def __init__(
        self,
        original: Callable[..., tuple[Tensor, Tensor]],
        state: CallState,
        build_plan: Callable[[ComfyCall, torch.device], RopePlan],
        what: str,
        model: nn.Module,
    ) -> None:
        self.original = original
        self._state = state
        self._build_plan = build_plan
        self._what = what
        self._step = step(model)
        self._axes_dims, _ = cogvideox(model)
        self._probe(model)

    def __call__(self, h, w, t, device=None, **kwargs: Any):
        cos, sin = self.original(h, w, t, device=device, **kwargs)
        call = call_in_flight(self._state, self._what)
        if not call.axes:
            return cos, sin
        plan = plan_of(call, cos.device, self._build_plan)
        plan = one_plan_for_the_call(call, plan)  # the tables have no batch axis
        ours_cos, ours_sin = rope_tables(grid_positions(h, w, t, self._step, cos.device, plan.inv_freq.dtype), plan)
        keep = torch.ones_like(plan.pair_axis, dtype=torch.bool)
        for axis in call.axes:
            keep = keep & (plan.pair_axis != axis)
        keep = keep.repeat_interleave(2)  # [D]: each pair's value twice, as the method lays it out
        return (torch.where(keep, cos, ours_cos[0].to(cos.dtype)), torch.where(keep, sin, ours_sin[0].to(sin.dtype)))

    def _probe(self, model: nn.Module) -> None:
        """The method on a 2 x 3 x 4 grid must give theta-10000 RoPE at these positions in this layout."""
        device = next(iter(model.parameters()), torch.zeros(())).device
        h, w, t = 3, 4, 2
        with torch.no_grad():
            out = self.original(h, w, t, device=device)
        pos = grid_positions(h, w, t, self._step, device)[0]  # [L, 3]
        freqs = [THETA ** (-torch.arange(0, d, 2, dtype=torch.float64, device=device) / d) for d in self._axes_dims]
        angles = torch.cat([pos[:, a : a + 1] * f for a, f in enumerate(freqs)], dim=-1).repeat_interleave(2, -1)
        ok = isinstance(out, tuple) and len(out) == 2 and all(o.shape == angles.shape for o in out)
        if not ok or not all(torch.allclose(o.double(), want, rtol=0, atol=1e-5)
                             for o, want in zip(out, (angles.cos(), angles.sin()))):
            raise TypeError(
                f"{self._what} does not return CogVideoX's (cos, sin) [T*H*W, head_dim] (axes {self._axes_dims}, "
                f"theta {THETA}, row / column step {self._step}); the row does not describe this model"
            )

    def __repr__(self) -> str:
        return f"DyPECogVideoXEmbed({self._what})"


def replacement(original, adapter, state: CallState, what: str) -> DyPECogVideoXEmbed:
    return DyPECogVideoXEmbed(original, state, adapter.build_plan, what, adapter.model)


READERS = {"cogvideox": cogvideox}
REPLACEMENTS = {"cogvideox": replacement}
