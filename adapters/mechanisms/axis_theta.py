"""Mechanism for video RoPE modules with a theta of their own on every axis (Cosmos' NTK-scaled
CosmosRotaryPosEmbed): forward(latent [B, C, F, H, W], ...) -> (cos, sin) [F * H * W, D].

Each axis a is standard RoPE over the integer positions of the latent grid, with frequencies theta_a^(-2k/d_a),
theta_a = 10000 * rope_scale_a ** (d_a / (d_a - 2)): NTK-aware scaling the model was trained with. DyPE's
schedules are defined on such frequencies for any theta, so axis a follows the schedule with theta_a and its own
base length (docs/families_passed.md gives the equations). The module's channels are `half`-style: the angle of
pair j sits at channels j and j + D/2, the pairs in (frames, rows, columns) blocks.

The stock module is called and every pair DyPE does not move in this call keeps its number (torch.where on the
device): at or below the base grid the tables are the module's own, bit for bit, in its own float32 arithmetic.
Moved pairs take DyPE's angles computed in float64 where the device has it, cast to the stock dtype. At install
the module is called on a small latent and must return exactly this layout (within float32 rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from dype_rope.rope import build_plan, check_axes_dims, freq_dtype, plain_plan
from dype_rope.timestep import diffusion_time

from ..base import refuse_mixed_times, spans_on
from ..parallel import swap_module


def axis_pairs(n: int, inv_freq: Tensor, mscale: Tensor) -> tuple[Tensor, Tensor]:
    """(m cos, m sin) [n, d/2] of positions 0 .. n-1 of one axis, in the frequencies' dtype."""
    angles = torch.arange(n, dtype=inv_freq.dtype, device=inv_freq.device).unsqueeze(-1) * inv_freq
    return angles.cos() * mscale, angles.sin() * mscale


def half_tables(grid: Sequence[int], blocks: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Per-axis (cos, sin) [n_a, d_a/2] blocks -> tables [F * H * W, D] of a frames-major grid, each pair's value
    at channels j and j + D/2."""
    f, h, w = grid
    shapes = ((f, 1, 1, -1), (1, h, 1, -1), (1, 1, w, -1))

    def spread(i: int) -> Tensor:
        parts = [b[i].view(shape).expand(f, h, w, -1) for b, shape in zip(blocks, shapes)]
        half = torch.cat(parts, dim=-1).reshape(f * h * w, -1)
        return torch.cat([half, half], dim=-1)

    return spread(0), spread(1)


@dataclass(frozen=True)
class AxisThetaGrid:
    """A module at `Family.module` taking the latent first, with attributes giving its layout:
    `axes_dims(module)` -> channels (frames, rows, columns), `thetas(module)` -> theta per axis,
    `patch(module)` -> latent pixels per token (frames, rows, columns). `refusal(config)` says why a configuration
    of the model cannot be patched (None where it can)."""

    axes_dims: Callable[[nn.Module], Sequence[int]]
    thetas: Callable[[nn.Module], Sequence[float]]
    patch: Callable[[nn.Module], Sequence[int]]
    refusal: Callable[[Any], Optional[str]] = lambda config: None

    def describe(self) -> str:
        """The mechanism, for the supported-models table."""
        return "grid, a theta per axis, (cos, sin) halves"

    def install(self, adapter) -> None:
        model, family = adapter.model, adapter.family
        reason = self.refusal(getattr(model, "config", None))
        if reason is not None:
            raise TypeError(f"dype_rope does not patch this {type(model).__name__}: {reason}")
        original = getattr(model, family.module, None)
        if original is None or isinstance(original, DyPEAxisThetaRope):
            raise RuntimeError(f"{type(model).__name__}.{family.module} is missing or already a DyPE embedding")
        axes_dims = check_axes_dims(self.axes_dims(original))
        thetas = tuple(float(x) for x in self.thetas(original))
        patch = tuple(int(p) for p in self.patch(original))
        self._probe(original, axes_dims, thetas, patch)
        time = family.time
        base_lens = adapter.axis_base_lens(3)

        def rescaled(hidden_states: Tensor, stock: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            step = adapter.step
            if step.timestep is None:
                raise adapter.outside_forward()
            grid = tuple(hidden_states.shape[2 + i] // p for i, p in enumerate(patch))
            device = hidden_states.device
            dtype = freq_dtype(device)
            timestep = step.timestep
            if isinstance(timestep, Tensor) and timestep.dim() == 5:
                # Per-frame times [B, 1, F, 1, 1] (Cosmos 2.5's video2world): conditioning frames come first at
                # their own low time; the last frame is generated, at the call's noise level.
                timestep = timestep[:, 0, -1, 0, 0]
            t = diffusion_time(timestep, divide_by=time.divide_by, reverse=time.reverse, dtype=dtype, device=device)
            scales = adapter.axis_scales(spans_on(grid, dtype, device))
            refuse_mixed_times(t, scales > 1)
            step.t, step.scales = t, scales
            blocks, moved = [], []
            for a, (dim, theta) in enumerate(zip(axes_dims, thetas)):
                plan = build_plan((dim,), theta, scales[a : a + 1], t, adapter.cfg, (base_lens[a],))
                plain = plain_plan((dim,), theta, device, dtype)
                blocks.append(axis_pairs(grid[a], plan.inv_freq, plan.mscale))
                moved.append((plan.inv_freq != plain.inv_freq) | (plan.mscale != 1))
            new_cos, new_sin = half_tables(grid, blocks)
            mask = torch.cat(moved)
            mask = torch.cat([mask, mask])  # [D]: pair j at channels j and j + D/2
            cos, sin = stock
            return torch.where(mask, new_cos.to(cos.dtype), cos), torch.where(mask, new_sin.to(sin.dtype), sin)

        swap_module(adapter, family.module, DyPEAxisThetaRope(original, rescaled))
        adapter.hook_calls(adapter.capture(time.argument))

    def _probe(self, module: nn.Module, axes_dims, thetas, patch) -> None:
        """The stock module on a 2 x 3 x 4 grid must be plain RoPE with these thetas in this layout."""
        grid = (2, 3, 4)
        device = next(iter(module.buffers()), torch.zeros(())).device
        latent = torch.zeros(1, 1, *(g * p for g, p in zip(grid, patch)), device=device)
        with torch.no_grad():
            out = module(latent)
        blocks = []
        for a, (dim, theta) in enumerate(zip(axes_dims, thetas)):
            plain = plain_plan((dim,), theta, device)
            blocks.append(axis_pairs(grid[a], plain.inv_freq, plain.mscale))
        want = half_tables(grid, blocks)
        ok = isinstance(out, tuple) and len(out) == 2 and all(o.shape == w.shape for o, w in zip(out, want))
        if not ok or not all(torch.allclose(o.double(), w, atol=1e-5) for o, w in zip(out, want)):
            raise TypeError(
                f"{type(module).__name__} does not return (cos, sin) [F * H * W, D] of RoPE with thetas {thetas} and "
                f"axes_dims {list(axes_dims)} in halves; this row does not describe the module"
            )


class DyPEAxisThetaRope(nn.Module):
    """Drop-in for the stock module: calls it, then gives DyPE's numbers to the pairs DyPE moves."""

    def __init__(self, original: nn.Module, rescaled: Callable) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a submodule: the module tree stays as it was
        for name in ("patch_size", "max_size", "base_fps", "dim_t", "dim_h", "dim_w"):
            if hasattr(original, name):
                setattr(self, name, getattr(original, name))
        self._rescaled = rescaled

    def forward(self, hidden_states: Tensor, *args, **kwargs):
        stock = self.original(hidden_states, *args, **kwargs)
        return self._rescaled(hidden_states, stock)
