"""What the video adapters (Wan, HunyuanVideo) share: a frames x rows x columns latent grid whose size is
read from the 5-D latent's shape, spatial-only rescaling by default, optional temporal rescaling.

A video DiT's RoPE module receives the latent [B, C, frames, height, width] itself, so the grid that sets
the per-axis scale is a set of Python integers, known without reading any tensor value; the diffusion time
is the model call's own `timestep` argument, captured by the forward pre-hook.

`base_grid` has two entries (rows, columns) for spatial rescaling only (the temporal axis keeps plain
RoPE), or three (frames, rows, columns) to also rescale the temporal axis against its own training frame
count when generating more frames than the model was trained on. Frames count latent frames: Wan 2.1's 81
video frames are 21 latent frames, so `dype_rope.patch(wan, base_grid=(21, 30, 52))`. Both forms pass
through `dype_rope.patch(..., base_grid=...)` unchanged; `base_resolution` (pixels) sets rows and columns
only.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from dype_rope.config import DyPEConfig
from dype_rope.rope import RopePlan, freq_dtype, plain_plan, rope_tables
from dype_rope.timestep import diffusion_time, diffusion_times

from .base import Adapter, spans_on

SPATIAL_AXES = (1, 2)
ALL_AXES = (0, 1, 2)


def latent_grid(hidden_states: Tensor, patch: Sequence[int]) -> tuple[int, int, int]:
    """(frames, rows, columns) of the token grid of a latent [B, C, F, H, W] patchified by (p_t, p_h, p_w)."""
    if hidden_states.dim() != 5:
        raise ValueError(
            f"a video RoPE module takes the latent [batch, channels, frames, height, width], got shape "
            f"{tuple(hidden_states.shape)}"
        )
    _, _, f, h, w = hidden_states.shape
    return f // patch[0], h // patch[1], w // patch[2]


def grid_tables(grid: Sequence[int], plan: RopePlan, axes_dims: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Interleaved cos/sin [F * H * W, D] of every token of a frames-major grid under `plan`; [B, F * H * W, D]
    under a plan per sample ([B, D/2]).

    Every axis owns a contiguous block of channels, so one table over positions 0..max(grid) - 1 holds all
    the values; each axis block is cut to its own length and broadcast over the other two axes. The numbers
    are those of `rope_tables` on the full (f, h, w) position list, computed max(grid) times instead of
    F * H * W times.
    """
    n = max(grid)
    device = plan.inv_freq.device
    pos = torch.arange(n, dtype=torch.float32, device=device).unsqueeze(-1).expand(n, len(axes_dims))
    cos, sin = rope_tables(pos, plan, "interleaved")
    f, h, w = grid
    lead = tuple(cos.shape[:-2])  # () or (B,)
    shapes = ((f, 1, 1, -1), (1, h, 1, -1), (1, 1, w, -1))

    def spread(table: Tensor) -> Tensor:
        blocks = table.split(list(axes_dims), dim=-1)
        parts = [
            b[..., :size, :].reshape(*lead, *shape).expand(*lead, f, h, w, -1)
            for b, size, shape in zip(blocks, grid, shapes)
        ]
        return torch.cat(parts, dim=-1).reshape(*lead, f * h * w, -1)

    return spread(cos), spread(sin)


def in_precision(plan: RopePlan, axes_dims: Sequence[int], theta: float, dtype: torch.dtype) -> RopePlan:
    """The plan cast to the precision the model computes its angles in.

    Pairs the schedule leaves untouched (axes not rescaled, grids within the base, YaRN's low-frequency pairs,
    method "none") get the plain frequencies computed in `dtype` itself, as the model computes them, so that
    they reproduce the model's tables bit for bit; only the pairs DyPE moves take the cast float64 values.
    """
    if plan.inv_freq.dtype == dtype:
        return plan
    device = plan.inv_freq.device
    plain_wide = plain_plan(axes_dims, theta, device, plan.inv_freq.dtype)
    plain = plain_plan(axes_dims, theta, device, dtype)
    untouched = (plan.inv_freq == plain_wide.inv_freq) & (plan.mscale == 1)
    inv_freq = torch.where(untouched, plain.inv_freq, plan.inv_freq.to(dtype))
    mscale = torch.where(untouched, plain.mscale, plan.mscale.to(dtype))
    return RopePlan(inv_freq, mscale, plan.pair_axis)


class VideoAdapter(Adapter):
    """Base of the video adapters: spatial rescaling by default, temporal too with a 3-entry base_grid."""

    rescaled_axes = SPATIAL_AXES
    timestep_range = 1000.0  # the models embed timesteps in [0, 1000]

    def __init__(
        self,
        model: nn.Module,
        cfg: DyPEConfig,
        base_grid: Sequence[int] | None,
        aspect: str = "per-axis",
        backend: str = "torch",
        module: nn.Module | None = None,
    ) -> None:
        if base_grid is not None and len(tuple(base_grid)) == 3:
            self.rescaled_axes = ALL_AXES  # the instance's own axes: the class default stays spatial-only
        elif base_grid is not None and len(tuple(base_grid)) != 2:
            raise ValueError(
                f"{self.name} takes base_grid=(rows, columns) or (frames, rows, columns) in tokens, "
                f"got {tuple(base_grid)}"
            )
        super().__init__(model, cfg, base_grid, aspect, backend, module)

    @property
    def temporal(self) -> bool:
        """Whether the temporal axis is rescaled (a base frame count was given)."""
        return 0 in self.rescaled_axes

    def axis_scales(self, spans: Tensor) -> Tensor:
        """Per-axis size ratio; "isotropic" shares the largest spatial ratio between rows and columns only:
        frames are a different kind of extent and keep their own ratio."""
        base = spans_on(self.axis_base_lens(3), spans.dtype, spans.device)
        ratios = spans / base
        spatial = ratios[1:]
        if self.aspect == "isotropic":
            spatial = spatial.amax().expand(2)
        frames = ratios[:1] if self.temporal else torch.ones_like(ratios[:1])
        return torch.cat([frames, spatial])

    def video_plan(self, grid: Sequence[int], device: torch.device, axes_dims: Sequence[int], theta: float,
                   angle_dtype: torch.dtype, per_sample: bool = False) -> RopePlan:
        """This call's plan for a token grid (frames, rows, columns), in the model's angle precision: one plan
        per sample ([B, D/2]) where the family's attention takes tables with a batch dimension (`per_sample`),
        else one for the call."""
        if self.step.timestep is None:
            raise self.outside_forward()
        dtype = freq_dtype(device)
        timestep = self.step.timestep
        if isinstance(timestep, Tensor) and timestep.dim() == 2:
            # Per-token timesteps (Wan 2.2 TI2V): conditioning tokens sit at 0, the generated ones at the
            # call's noise level, which is the largest.
            timestep = timestep.amax(dim=1)
        times = diffusion_times if per_sample else diffusion_time
        t = times(timestep, divide_by=self.timestep_range, dtype=dtype, device=device)
        spans = spans_on(grid, dtype, device)
        plan = self.plan_step(t, spans, axes_dims, theta, self.axis_base_lens(3))
        return in_precision(plan, axes_dims, theta, angle_dtype)
