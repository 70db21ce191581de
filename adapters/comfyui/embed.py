"""The replacement for an EmbedND-style module in a ComfyUI model: the same rotation matrices, rescaled.

ComfyUI's `comfy.ldm.flux.layers.EmbedND` (and the ones Qwen-Image, Lumina2 / Z-Image, Wan, HunyuanVideo,
Kandinsky5 and Krea2 reuse) maps ids [B, L, n_axes] to rotation matrices [B, 1, L, D/2, 2, 2]. The
replacement always calls the original module too and keeps the original's number on every pair whose axis is
not rescaled in this call: at or below the base grid, on the caption / frame axis, and for every family's own
precision, the tables are the stock ones bit for bit, by construction. Only the pairs of a rescaled axis take
DyPE's frequencies, in float64 where the device has it, rounded to the original's dtype.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan
from dype_rope.rope_formats import rotation_matrices

from .call import CallState, ComfyCall, call_in_flight, plan_of
from .formats import pairs


class DyPEComfyEmbed(nn.Module):
    """forward(ids) -> the original module's output, with the rescaled axes' pairs following DyPE."""

    def __init__(
        self,
        original: nn.Module,
        state: CallState,
        build_plan: Callable[[ComfyCall, torch.device], RopePlan],
        what: str,
        layout: Callable[[Tensor], Tensor] = pairs,
    ) -> None:
        super().__init__()
        # a plain attribute, not a submodule: the module tree (and so state_dict, LoRA keys) stays as it was
        object.__setattr__(self, "original", original)
        for attr in ("dim", "theta", "axes_dim"):  # code around the module reads these
            if hasattr(original, attr):
                setattr(self, attr, getattr(original, attr))
        self._state = state
        self._build_plan = build_plan
        self._what = what
        self._layout = layout  # the original's arrangement of the pairs (formats.LAYOUTS)

    def forward(self, ids: Tensor) -> Tensor:
        stock = self.original(ids)
        call = call_in_flight(self._state, self._what)
        if not call.axes:  # no axis larger than the base grid (a host fact, from the latent's shape)
            return stock
        plan = plan_of(call, ids.device, self._build_plan)  # one per sample: [B, D/2]
        if ids.dim() == 2:
            ids = ids.unsqueeze(0)
        batch = plan.inv_freq.shape[0]
        if ids.shape[0] not in (1, batch):
            raise ValueError(
                f"{self._what}: position ids of batch {ids.shape[0]} do not fit a model call of {batch} samples"
            )
        # ids shared by the whole batch (Wan, Lumina2: batch 1) broadcast against the plan of every sample, so
        # each sample turns at its own sigma (a batch may mix times: a direct call, batched serving); the
        # model's attention broadcasts the tables' batch against q and k as it does the stock batch of 1
        ours = self._layout(rotation_matrices(ids, plan))  # [B, L, D/2, 2, 2]
        # the original inserts singleton axes (the head axis) after the batch axis: same numbers, its shape
        ours = ours.reshape(ours.shape[0], *stock.shape[1:])
        keep = torch.ones_like(plan.pair_axis, dtype=torch.bool)
        for axis in call.axes:  # Python ints against a device tensor: no host copy
            keep = keep & (plan.pair_axis != axis)
        keep = self._layout(keep.view(-1, 1, 1).expand(-1, 2, 2))  # [D/2, 2, 2], arranged as the tables
        return torch.where(keep, stock, ours.to(stock.dtype))

    def extra_repr(self) -> str:
        return self._what
