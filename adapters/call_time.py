"""What an encoding that sees its own positions (or sizes) needs from the model call: the raw timestep
argument, captured by the forward pre-hook, and host-known sizes turned into a device tensor."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .base import Adapter, argument_reader


def capture_timestep(adapter: Adapter, name: str) -> Callable[[tuple, dict], None]:
    """A `begin` for Adapter.hook_calls that stores argument `name` of the model's forward as the raw timestep."""
    read = argument_reader(adapter.model.forward, name)
    step = adapter.step

    def begin(args: tuple, kwargs: dict) -> None:
        step.clear()
        step.timestep = read(args, kwargs)

    return begin


def spans_on(sizes, dtype: torch.dtype, device) -> Tensor:
    """Per-axis sizes known on the host (from tensor shapes or img_shapes) as a [n_axes] tensor on `device`,
    filled in place rather than copied from host memory."""
    return torch.stack([torch.full((), float(s), dtype=dtype, device=device) for s in sizes])
