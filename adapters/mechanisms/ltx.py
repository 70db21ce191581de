"""Mechanism for LTX-Video's LTXVideoRotaryPosEmbed: RoPE on normalised, centred coordinates.

The module maps each token to coordinates u = (frame, row, column) in units of its base sizes (20 frames, 2048 x
2048 pixels): from the latent grid times `rope_interpolation_scale` (LTXPipeline: the VAE's pixels per latent
pixel) or from pixel `video_coords` (LTXConditionPipeline). Pair k of axis a turns by
omega_k (2 u_a - 1), omega_k = (pi / 2) theta^(k / (n - 1)), k = 0 .. n-1, n = dim // 6, and the tables
[B, S, dim] hold, after dim % 6 padding channels (cos 1, sin 0), the pairs of (k, axis) at channels
2 (3 k + a) and 2 (3 k + a) + 1.

That is standard RoPE with theta' = theta^(n / (n - 1)) on d = 2n channels, its pairs in reverse order, over
positions p = (pi / 2) theta (2 u - 1): omega_k = theta'^(-2 j / d) with j = n - 1 - k. DyPE's schedules act on
that form with YaRN's base length L the base grid in tokens times one token's step in p (docs/families_passed.md).

The stock module is called and every pair DyPE does not move keeps its number (torch.where on the device), so at
or below the base grid the tables are the module's own bit for bit. Moved pairs take DyPE's angles computed in
float64 where the device has it (the stock float32 angles reach (pi / 2) theta ~ 1.6e4 rad, ~1e-3 off). The
tables carry a batch dimension: one plan per sample. At install the module is probed on a small grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Optional

import torch
from torch import Tensor, nn

from dype_rope.rope import build_plan, freq_dtype, plain_plan
from dype_rope.timestep import diffusion_times

from ..base import spans_on
from ..parallel import swap_module


def stock_layout(module: nn.Module) -> tuple[int, int, float, tuple[float, float, float], tuple[int, int]]:
    """(pairs per axis n, padding channels, theta, base sizes (frames, height, width), patch (t, s)) of the module,
    with a clear error where it lacks them."""
    try:
        dim, theta = int(module.dim), float(module.theta)
        bases = (float(module.base_num_frames), float(module.base_height), float(module.base_width))
        patch = (int(module.patch_size_t), int(module.patch_size))
    except (AttributeError, TypeError, ValueError) as err:
        raise TypeError(f"{type(module).__name__} is not an LTXVideoRotaryPosEmbed-style module ({err})") from None
    if dim // 6 < 2:
        raise TypeError(f"{type(module).__name__}.dim = {dim} gives fewer than 2 pairs per axis")
    return dim // 6, dim % 6, theta, bases, patch


def assemble(axes: list[Optional[Tensor]], pad: int, fill: float) -> Tensor:
    """Per-axis [..., n] values (None: an axis filled with `fill`) -> the module's layout [..., pad + 6n]:
    pair (k, a) at channels pad + 2 (3 k + a) and the next one."""
    ref = next(x for x in axes if x is not None)
    parts = [x if x is not None else torch.full_like(ref, fill) for x in axes]
    pairs = torch.stack(parts, dim=-1).flatten(-2).repeat_interleave(2, dim=-1)
    if pad:
        pairs = torch.cat([torch.full_like(pairs[..., :pad], fill), pairs], dim=-1)
    return pairs


def grid_coordinates(grid, steps, dtype, device) -> list[Tensor]:
    """u [F * H * W] of every axis for a frames-major grid with per-token steps (the model's own grid)."""
    f, h, w = (torch.arange(n, dtype=dtype, device=device) * s for n, s in zip(grid, steps))
    mesh = torch.meshgrid(f, h, w, indexing="ij")
    return [m.reshape(-1) for m in mesh]


def centred_pairs(u: Tensor, n: int, theta: float, scale: Tensor, t: Tensor, cfg, base_tokens: float,
                  step_u: float) -> tuple[Tensor, Tensor, Tensor]:
    """DyPE's pairs of one rescaled axis of LTX's centred RoPE, in the stock's pair order k = 0 .. n-1.

    u: coordinates [B or 1, S] (in units of the base size, float64 where the device has it); scale: the axis'
    size ratio [1]; t: DyPE's time [B or 1]; base_tokens: the base grid on this axis in tokens, step_u: one
    token's step in u. Returns cos and sin [B, S, n] (mscale included) and which pairs DyPE moves [B, 1, n]
    (its frequency or mscale not the plain one). The ComfyUI LTX rows use this function too: one copy of the
    rewrite as standard RoPE (theta' = theta^(n / (n - 1)), pairs reversed, positions p = (pi / 2) theta (2u - 1))."""
    theta_std = theta ** (n / (n - 1))
    reach = math.pi / 2 * theta  # p = reach * (2u - 1)
    base_len = base_tokens * step_u * 2 * reach  # the base grid in units of p
    plan = build_plan((2 * n,), theta_std, scale, t, cfg, (base_len,))
    plain = plain_plan((2 * n,), theta_std, u.device, u.dtype)
    inv, ms = plan.inv_freq.flip(-1), plan.mscale.flip(-1)  # [B or 1, n], the stock's pair order
    hit = (plan.inv_freq != plain.inv_freq) | (plan.mscale != 1)
    angle = (reach * (2 * u - 1)).unsqueeze(-1) * inv.unsqueeze(1)  # [B, S, n]
    return angle.cos() * ms.unsqueeze(1), angle.sin() * ms.unsqueeze(1), hit.flip(-1).unsqueeze(1)


@dataclass(frozen=True)
class CentredCoordinates:
    """LTXVideoRotaryPosEmbed at `Family.module`: forward(hidden_states, num_frames, height, width,
    rope_interpolation_scale, video_coords) -> (cos, sin) [B, S, dim]. Rows and columns (axes 1, 2) rescaled."""

    def install(self, adapter) -> None:
        model, family = adapter.model, adapter.family
        original = getattr(model, family.module, None)
        if original is None or isinstance(original, DyPECentredRope):
            raise RuntimeError(f"{type(model).__name__}.{family.module} is missing or already a DyPE embedding")
        n, pad, theta, bases, patch = stock_layout(original)
        self._probe(original, n, pad, theta, bases, patch)
        ppt = float(adapter.pixels_per_token)
        base_lens = adapter.axis_base_lens(3)
        divide_by, reverse = family.time.divide_by, family.time.reverse

        def rescaled(hidden_states, num_frames, height, width, scale, video_coords, stock):
            step = adapter.step
            if step.timestep is None:
                raise adapter.outside_forward()
            device = hidden_states.device
            dtype = freq_dtype(device)
            timestep = step.timestep
            if isinstance(timestep, Tensor) and timestep.dim() == 2:
                # Per-token times [B, S] (image-to-video, conditions): conditioning tokens sit at a lower time;
                # the generated ones at the call's noise level, the largest.
                timestep = timestep.amax(dim=-1)
            t = diffusion_times(timestep, divide_by=divide_by, reverse=reverse, dtype=dtype, device=device)
            if video_coords is None:
                # The model's own grid: token step rope_interpolation_scale * patch / base size (1 without it).
                if scale is None:
                    steps = (1.0, 1.0, 1.0)
                else:
                    if not all(isinstance(s, Real) for s in scale[1:]):
                        raise TypeError("rope_interpolation_scale's row and column entries must be numbers")
                    steps = (0.0, *(float(s) * patch[1] / b for s, b in zip(scale[1:], bases[1:])))
                coords = grid_coordinates((num_frames, height, width), steps, dtype, device)
                coords = [c.unsqueeze(0) for c in coords]  # [1, S]
                spans = spans_on((num_frames, height, width), dtype, device)
            else:
                # Pixel coordinates: tokens ppt pixels apart; the spans from their extent (on the device).
                vc = video_coords.to(dtype)
                coords = [vc[:, a] / bases[a] for a in range(3)]  # [B, S]
                steps = (0.0, *(ppt / b for b in bases[1:]))
                extent = [(vc[:, a].amax() - vc[:, a].amin()) / ppt + 1 for a in (1, 2)]
                spans = torch.stack([torch.ones((), dtype=dtype, device=device), *extent])
            scales = adapter.axis_scales(spans)
            step.t, step.scales = t, scales
            t_b = t.reshape(-1)  # [B] or [1]
            new_cos, new_sin, moved = [None], [None], [None]
            for a in (1, 2):
                cos_a, sin_a, hit = centred_pairs(coords[a], n, theta, scales[a : a + 1], t_b, adapter.cfg,
                                                  base_lens[a], steps[a])
                new_cos.append(cos_a)
                new_sin.append(sin_a)
                moved.append(hit.to(dtype))
            cos, sin = stock
            mask = assemble(moved, pad, 0.0) > 0  # [B or 1, 1, dim]
            return (
                torch.where(mask, assemble(new_cos, pad, 1.0).to(cos.dtype), cos),
                torch.where(mask, assemble(new_sin, pad, 0.0).to(sin.dtype), sin),
            )

        swap_module(adapter, family.module, DyPECentredRope(original, rescaled))
        adapter.hook_calls(adapter.capture(family.time.argument))

    def _probe(self, module, n, pad, theta, bases, patch) -> None:
        """The stock module on a 2 x 3 x 4 grid (LTXPipeline's scale at 25 fps) must be this layout."""
        grid, scale = (2, 3, 4), (8 / 25, 32.0, 32.0)
        device = next(iter(module.buffers()), torch.zeros(())).device
        with torch.no_grad():
            out = module(torch.zeros(1, 24, 1, device=device), *grid, scale, None)
        steps = (scale[0] * patch[0] / bases[0], *(s * patch[1] / b for s, b in zip(scale[1:], bases[1:])))
        coords = grid_coordinates(grid, steps, torch.float64, device)
        k = torch.arange(n, dtype=torch.float64, device=device)
        omega = math.pi / 2 * theta ** (k / (n - 1))
        angles = [(2 * c - 1).unsqueeze(-1) * omega for c in coords]
        want = (assemble([x.cos() for x in angles], pad, 1.0), assemble([x.sin() for x in angles], pad, 0.0))
        # float32 angles of up to (pi / 2) theta rad: a few units of their last place
        atol = 1e-5 + 8 * math.pi / 2 * theta * 2.0**-24
        ok = isinstance(out, tuple) and len(out) == 2 and all(o.shape == (1, *w.shape) for o, w in zip(out, want))
        if not ok or not all(torch.allclose(o[0].double(), w, rtol=0, atol=atol) for o, w in zip(out, want)):
            raise TypeError(
                f"{type(module).__name__} does not return (cos, sin) [B, S, dim] of LTX-Video's centred RoPE "
                f"(theta {theta}, {n} pairs per axis interleaved by axis); this row does not describe the module"
            )


class DyPECentredRope(nn.Module):
    """Drop-in for the stock module: calls it, then gives DyPE's numbers to the pairs DyPE moves."""

    def __init__(self, original: nn.Module, rescaled) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a submodule: the module tree stays as it was
        for name in ("dim", "theta", "base_num_frames", "base_height", "base_width", "patch_size", "patch_size_t"):
            setattr(self, name, getattr(original, name))
        self._rescaled = rescaled

    def forward(self, hidden_states, num_frames=None, height=None, width=None, rope_interpolation_scale=None,
                video_coords=None):
        stock = self.original(hidden_states, num_frames, height, width, rope_interpolation_scale, video_coords)
        return self._rescaled(hidden_states, num_frames, height, width, rope_interpolation_scale, video_coords, stock)
