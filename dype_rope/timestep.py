"""The diffusion time t, normalised so that 1 is pure noise and 0 is data, taken from a model's own argument.

Checks run only where they cost no device sync: on Python numbers, and on host tensors outside
torch.compile. A CUDA timestep is trusted as it is; reading its value would stall the stream every step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_value(values, what: str) -> None:
    for v in values:
        if not math.isfinite(v) or v < 0.0 or v > 1.0:
            raise ValueError(f"{what} must be a diffusion time in [0, 1] (1 = noise), got {v}")


def diffusion_time(
    timestep, *, divide_by: float = 1.0, reverse: bool = False, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """A 0-d tensor t in [0, 1] from a model's timestep argument.

    divide_by: the model's timestep range (1 for FLUX's sigma, 1000 for SD3's timestep);
    reverse:   True for models whose time runs from 0 = noise to 1 = data (Lumina2, Z-Image).

    Every sample of a batch shares one diffusion time in every sampler this library supports; a batch is
    represented by its first element.
    """
    if timestep is None:
        raise ValueError("the model was called without a timestep; DyPE needs the diffusion time of every call")
    if not isinstance(timestep, Tensor):
        if isinstance(timestep, bool) or not isinstance(timestep, (int, float)):
            raise TypeError(f"timestep must be a tensor or a number, got {type(timestep).__name__}")
        t = float(timestep) / divide_by
        t = 1.0 - t if reverse else t
        _check_value([t], "timestep")
        return torch.tensor(t, dtype=dtype, device=device)
    if timestep.numel() == 0:
        raise ValueError("timestep is empty")
    flat = timestep.reshape(-1)
    t = flat[0].to(dtype) / divide_by
    t = 1.0 - t if reverse else t
    if flat.device.type == "cpu" and not torch.compiler.is_compiling():
        # Host values: checking them is free. (Never reached under torch.compile or for device tensors.)
        values = (flat.double() / divide_by).tolist()
        _check_value([1.0 - v if reverse else v for v in values], "timestep")
        if len(set(values)) > 1:
            raise ValueError(
                f"all samples of a batch must share one diffusion time, got timesteps {sorted(set(values))}"
            )
    return t if device is None else t.to(device)
