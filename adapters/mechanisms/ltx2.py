"""Mechanism for LTX-2's LTX2AudioVideoRotaryPosEmbed (the video self-attention's `rope`): LTX-Video's centred
RoPE (adapters/mechanisms/ltx.py) on pixel patch midpoints.

The module takes coordinates [B, 3, S, 2] (each token's [start, end) per axis: seconds for frames, pixels for rows
and columns; or [B, 3, S] midpoints), turns the midpoints into u = midpoint / base size (20 s, 2048 x 2048 px) and
gives pair k of axis a the angle omega_k (2 u_a - 1), omega_k = (pi / 2) theta^(k / (n - 1)), n = dim // 6: the
frequencies and the pair order of LTX-Video, so the same rewrite as standard RoPE (theta' = theta^(n / (n - 1)),
pairs reversed, positions p = (pi / 2) theta (2 u - 1)) carries DyPE's schedules (docs/families_passed.md).

Two layouts of the same pairs, chosen by the model's `rope_type` and recognised here by a probe at install:
"interleaved", (cos, sin) [B, S, dim] with dim % 6 padding channels in front and pair (k, a) at channels
pad + 2 (3 k + a) and the next one; "split", the dim / 2 angles (dim / 2 - 3 n padding entries in front, pair
(k, a) at entry pad + 3 k + a) cut into the heads' halves, (cos, sin) [B, heads, S, dim / (2 heads)].

Rows and columns are rescaled; frames, the audio RoPE and the two audio-video cross-attention RoPEs (time only)
never are. The span of an axis is the extent of the coordinates the call receives, in tokens (the module's own
spacing, VAE factor times patch): every LTX-2 pipeline places its appended keyframe and reference tokens inside
the generated video's pixel box, so they never widen it. The stock module is called and keeps its number on every
pair DyPE does not move (torch.where on the device); moved pairs take DyPE's angles in float64 where the device
has it. The tables carry a batch dimension: one plan per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dype_rope.rope import build_plan, freq_dtype, plain_plan
from dype_rope.timestep import diffusion_times

from ..parallel import swap_module
from .ltx import assemble

LAYOUTS = ("interleaved", "split")
# What the model and its pipelines read off `rope` besides calling it.
_ATTRIBUTES = (
    "dim", "patch_size", "patch_size_t", "rope_type", "base_num_frames", "num_attention_heads", "base_height",
    "base_width", "sampling_rate", "hop_length", "audio_latents_per_second", "scale_factors", "theta",
    "causal_offset", "modality", "double_precision",
)


@dataclass(frozen=True)
class VideoRope:
    """The numbers of one LTX2AudioVideoRotaryPosEmbed read off the module (with a clear error if it lacks them)."""

    dim: int
    theta: float
    bases: tuple[float, float, float]  # frames (s), rows, columns (px)
    spacing: tuple[float, float]  # px between neighbouring tokens' midpoints on rows and columns
    heads: int

    @property
    def n(self) -> int:
        return self.dim // 6

    @classmethod
    def of(cls, module: nn.Module) -> "VideoRope":
        try:
            if module.modality != "video":
                raise ValueError(f"modality {module.modality!r}")
            dim, theta, heads = int(module.dim), float(module.theta), int(module.num_attention_heads)
            bases = (float(module.base_num_frames), float(module.base_height), float(module.base_width))
            spacing = tuple(float(module.scale_factors[a]) * int(module.patch_size) for a in (1, 2))
        except (AttributeError, TypeError, ValueError, IndexError) as err:
            raise TypeError(
                f"{type(module).__name__} is not a video LTX2AudioVideoRotaryPosEmbed-style module ({err})"
            ) from None
        if dim // 6 < 2:
            raise TypeError(f"{type(module).__name__}.dim = {dim} gives fewer than 2 pairs per axis")
        return cls(dim, theta, bases, spacing, heads)

    def tables(self, axes: list, fill: float, layout: str) -> Tensor:
        """Per-axis [..., S, n] values (None: an axis filled with `fill`) in `layout`, batch first."""
        if layout == "interleaved":
            return assemble(axes, self.dim % 6, fill)
        ref = next(x for x in axes if x is not None)
        parts = [x if x is not None else torch.full_like(ref, fill) for x in axes]
        half = torch.stack(parts, dim=-1).flatten(-2)  # [B, S, 3n], entry 3 k + a
        pad = self.dim // 2 - 3 * self.n
        if pad:
            half = torch.cat([torch.full_like(half[..., :pad], fill), half], dim=-1)
        return half.unflatten(-1, (self.heads, -1)).transpose(-3, -2)  # [B, heads, S, dim / (2 heads)]


def midpoints(coords: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, 3, S] midpoints of [B, 3, S, 2] bounds (as the module takes them), or the midpoints themselves."""
    coords = coords.to(dtype)
    return coords.mean(dim=-1) if coords.dim() == 4 else coords


@dataclass(frozen=True)
class PixelMidpointCoordinates:
    """LTX2AudioVideoRotaryPosEmbed at `Family.module`: forward(coords, device) -> (cos, sin) in the 'interleaved'
    or 'split' layout. Rows and columns (axes 1, 2) rescaled."""

    def install(self, adapter) -> None:
        model, family = adapter.model, adapter.family
        original = getattr(model, family.module, None)
        if original is None or isinstance(original, DyPEVideoRope):
            raise RuntimeError(f"{type(model).__name__}.{family.module} is missing or already a DyPE embedding")
        rope = VideoRope.of(original)
        layout = probe(original, rope)
        n = rope.n
        theta_std = rope.theta ** (n / (n - 1))
        reach = math.pi / 2 * rope.theta  # p = reach * (2u - 1)
        base_lens = adapter.axis_base_lens(3)
        divide_by, reverse = family.time.divide_by, family.time.reverse

        def rescaled(coords: Tensor, stock: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            step = adapter.step
            if step.timestep is None:
                raise adapter.outside_forward()
            cos, sin = stock
            device = cos.device
            dtype = freq_dtype(device)
            timestep = step.timestep
            if isinstance(timestep, Tensor) and timestep.dim() == 2:
                # Per-token times [B, S] (image-to-video, conditions, keyframes, references): conditioning tokens
                # sit lower; the generated ones at the call's noise level, the largest.
                timestep = timestep.amax(dim=-1)
            t = diffusion_times(timestep, divide_by=divide_by, reverse=reverse, dtype=dtype, device=device)
            mid = midpoints(coords.to(device), dtype)  # [B, 3, S]
            extent = [(mid[:, a].amax() - mid[:, a].amin()) / rope.spacing[a - 1] + 1 for a in (1, 2)]
            spans = torch.stack([torch.ones((), dtype=dtype, device=device), *extent])
            scales = adapter.axis_scales(spans)
            step.t, step.scales = t, scales
            t_b = t.reshape(-1)  # [B] or [1]
            new_cos, new_sin, moved = [None], [None], [None]
            plain = plain_plan((2 * n,), theta_std, device, dtype)
            for a in (1, 2):
                # the base grid in units of p: tokens times one token's step in u times dp/du
                base_len = base_lens[a] * rope.spacing[a - 1] / rope.bases[a] * 2 * reach
                plan = build_plan((2 * n,), theta_std, scales[a : a + 1], t_b, adapter.cfg, (base_len,))
                inv, ms = plan.inv_freq.flip(-1), plan.mscale.flip(-1)  # [B or 1, n], the module's pair order
                hit = (plan.inv_freq != plain.inv_freq) | (plan.mscale != 1)
                u = mid[:, a] / rope.bases[a]  # [B, S]
                angle = (reach * (2 * u - 1)).unsqueeze(-1) * inv.unsqueeze(1)  # [B, S, n]
                new_cos.append(angle.cos() * ms.unsqueeze(1))
                new_sin.append(angle.sin() * ms.unsqueeze(1))
                moved.append(hit.flip(-1).unsqueeze(1).to(dtype))  # [B or 1, 1, n]
            mask = rope.tables(moved, 0.0, layout) > 0
            return (
                torch.where(mask, rope.tables(new_cos, 1.0, layout).to(cos.dtype), cos),
                torch.where(mask, rope.tables(new_sin, 0.0, layout).to(sin.dtype), sin),
            )

        swap_module(adapter, family.module, DyPEVideoRope(original, rescaled))
        adapter.hook_calls(adapter.capture(family.time.argument))


def probe(module: nn.Module, rope: VideoRope) -> str:
    """The layout the stock module returns on a 2 x 3 x 4 grid of pixel bounds, checked against LTX-2's formula
    in float64 (within the module's float32 rounding); a module of neither layout is refused. The module's own
    prepare_video_coords must space the tokens as `rope.spacing` says (the spans are counted in that spacing)."""
    device = next(iter(module.buffers()), torch.zeros(())).device
    frames, rows, cols = torch.meshgrid(torch.arange(2.0), torch.arange(3.0), torch.arange(4.0), indexing="ij")
    size = (8 / 24, *rope.spacing)  # a latent frame of LTX2Pipeline's 8 pixel frames at 24 fps, one token
    start = torch.stack([g.reshape(-1) * s for g, s in zip((frames, rows, cols), size)])  # [3, S]
    bounds = torch.stack([start, start + torch.tensor(size).unsqueeze(-1)], dim=-1).unsqueeze(0).to(device)
    name = type(module).__name__
    with torch.no_grad():
        # the class's forward: diffusers' hooks on the instance (a context-parallel split) are not the math
        out = type(module).forward(module, bounds.float(), device=device)
        spaced = midpoints(module.prepare_video_coords(1, 1, 2, 2, device), torch.float64)
    mid = midpoints(bounds, torch.float64)
    k = torch.arange(rope.n, dtype=torch.float64, device=device)
    omega = math.pi / 2 * rope.theta ** (k / (rope.n - 1))
    angles = [(2 * mid[:, a] / rope.bases[a] - 1).unsqueeze(-1) * omega for a in range(3)]  # [1, S, n]
    # float32 angles of up to (pi / 2) theta rad: a few units of their last place
    atol = 1e-5 + 8 * math.pi / 2 * rope.theta * 2.0**-24
    for layout in LAYOUTS:
        want = tuple(rope.tables([f(x) for x in angles], fill, layout) for f, fill in ((torch.cos, 1), (torch.sin, 0)))
        if isinstance(out, tuple) and len(out) == 2 and all(o.shape == w.shape for o, w in zip(out, want)):
            if all(torch.allclose(o.double(), w, rtol=0, atol=atol) for o, w in zip(out, want)):
                break
    else:
        raise TypeError(
            f"{name} does not return (cos, sin) of LTX-2's centred RoPE in the 'interleaved' or 'split' layout "
            f"(theta {rope.theta}, {rope.n} pairs per axis, {rope.heads} heads); this row does not describe the module"
        )
    steps = (spaced[0, 1, 2] - spaced[0, 1, 0], spaced[0, 2, 1] - spaced[0, 2, 0])  # next row, next column
    if any(float(s) != p for s, p in zip(steps, rope.spacing)):
        raise TypeError(
            f"{name}.prepare_video_coords spaces tokens {[float(s) for s in steps]} px apart, not scale_factors x "
            f"patch_size = {list(rope.spacing)}; this row does not describe the module"
        )
    return layout


class DyPEVideoRope(nn.Module):
    """Drop-in for the stock video `rope`: calls it, then gives DyPE's numbers to the pairs DyPE moves. The
    pipelines' prepare_video_coords / prepare_coords are the stock module's own."""

    def __init__(self, original: nn.Module, rescaled) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a submodule: the module tree stays as it was
        for name in _ATTRIBUTES:
            if hasattr(original, name):
                setattr(self, name, getattr(original, name))
        self._rescaled = rescaled

    def prepare_video_coords(self, *args, **kwargs):
        return self.original.prepare_video_coords(*args, **kwargs)

    def prepare_audio_coords(self, *args, **kwargs):
        return self.original.prepare_audio_coords(*args, **kwargs)

    def prepare_coords(self, *args, **kwargs):
        return self.original.prepare_coords(*args, **kwargs)

    def forward(self, coords: Tensor, device=None):
        stock = self.original(coords, device=device)
        return self._rescaled(coords, stock)
