"""The diffusion time t, normalised so that 1 is pure noise and 0 is data, taken from a model's own argument.

Checks run only where they cost no device sync: on Python numbers, and on host tensors outside
torch.compile. A CUDA timestep is trusted as it is; reading its value would stall the stream every step.

A batch may carry one time per sample (diffusers' model tests, training, batched serving). At or below the
base grid nothing depends on t, so any batch passes through. Above it, families whose attention takes tables
with a batch dimension (HiDream, Lumina2, Wan, SD3, EmbedND, the ComfyUI families), or is given per-sample
copies of its processors or a per-sample route of its own (FLUX, FLUX.2, Qwen-Image, CogView4, HunyuanVideo,
Z-Image: adapters/per_sample.py), build one plan per sample from :func:`diffusion_times`; the others, and those
whose per-sample route does not hold in a call, build one plan per call from :func:`diffusion_time`, which gives NaN
for a batch whose samples differ: the schedules ignore t on axes they do not rescale, so the NaN reaches only
rescaled tables, and an adapter that can read the values for free (host tensors) refuses the batch with
:data:`MIXED_TIMES` instead.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MIXED_TIMES = (
    "all samples of a batch must share one diffusion time where DyPE rescales (this image is larger than the "
    "base grid and this family builds one RoPE table per call); call the model once per time, or stay at or "
    "below the base grid"
)


def host_readable(x: Tensor) -> bool:
    """True where reading x's values costs nothing: a CPU tensor outside torch.compile."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _check_value(values, what: str) -> None:
    for v in values:
        if not math.isfinite(v) or v < 0.0 or v > 1.0:
            raise ValueError(f"{what} must be a diffusion time in [0, 1] (1 = noise), got {v}")


def diffusion_times(
    timestep, *, divide_by: float = 1.0, reverse: bool = False, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """t in [0, 1] per sample from a model's timestep argument: [B] for a tensor of B values, 0-d for a number
    or a 0-d tensor.

    divide_by: the model's timestep range (1 for FLUX's sigma, 1000 for SD3's timestep);
    reverse:   True for models whose time runs from 0 = noise to 1 = data (Lumina2, Z-Image).
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
    t = timestep.reshape(-1) if timestep.dim() else timestep
    t = t.to(dtype) / divide_by
    t = 1.0 - t if reverse else t
    if host_readable(timestep):
        # Host values: checking them is free. (Never reached under torch.compile or for device tensors.)
        _check_value(t.reshape(-1).tolist(), "timestep")
    return t if device is None else t.to(device)


def diffusion_time(
    timestep, *, divide_by: float = 1.0, reverse: bool = False, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """A 0-d tensor t in [0, 1] for the whole call: the samples' shared time, or NaN if they differ (decided
    on the device, without a sync). Arguments as :func:`diffusion_times`."""
    t = diffusion_times(timestep, divide_by=divide_by, reverse=reverse, dtype=dtype, device=device)
    if t.dim() == 0:
        return t
    first = t[0]
    if t.shape[0] == 1:  # a shape test: fixed when compiled
        return first
    return torch.where((t == first).all(), first, torch.full_like(first, math.nan))
