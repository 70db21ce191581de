"""Mechanism for interleaved multimodal RoPE (Qwen3-VL style MRoPE: Cosmos 3's Cosmos3VLTextRotaryEmbedding,
Ideogram 4's Ideogram4MRoPE).

The module maps position ids (frame / text index, row, column of every token) to (cos, sin) [B, N, D] in the
rotate-half layout (pair j on channels j and j + D/2). Its pairs share one ladder base^(-2j / D) and read an axis
chosen by j mod 3: rows where j % 3 == 1 and j < 3 n_rows, columns where j % 3 == 2 and j < 3 n_cols, the frame /
text index elsewhere (n = the module's sections). The n_a pairs of spatial axis a (a = 1 rows, 2 columns) are

    base^(-2 (3m + a) / D) = c_a * theta_a^(-2m / (2 n_a)),   theta_a = base^(6 n_a / D),   c_a = base^(-2a / D):

standard RoPE on 2 n_a channels over positions c_a p. DyPE's schedules act on that form of each spatial axis, one
plan per axis, YaRN's base length the base grid in tokens times c_a (docs/families.md, "Interleaved MRoPE").

The stock module is called and every pair DyPE does not move keeps its number (torch.where on the device), so at
or below the base grid the tables are the module's own bit for bit; frame / text pairs are never moved. Moved
pairs take DyPE's angles in float64 where the device has it, cast to the stock dtype. The tables carry a batch
dimension, so a batch of samples at different times gets one plan per sample. What differs between models is
declared by the row: where the ids' axis dimension sits and the forward's signature (`IdsLayout`), where the
scale comes from (`GridArgument` or `TokenRole`) and how the time argument is shaped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor, nn

from dype_rope.rope import build_plan, freq_dtype, plain_plan
from dype_rope.timestep import diffusion_times

from ..base import qualified_name, spans_on
from ..parallel import swap_module

SPATIAL = (1, 2)  # the spatial axes (rows, columns) of the ids, also each one's offset in the interleaving


def axis_pairs(head_dim: int, sections) -> dict[int, list[int]]:
    """The pairs each axis reads: {0: frame / text, 1: rows, 2: columns}."""
    half = head_dim // 2
    pairs = {a: list(range(a, 3 * int(sections[a]), 3)) for a in SPATIAL}
    taken = set(pairs[1]) | set(pairs[2])
    pairs[0] = [j for j in range(half) if j not in taken]
    return pairs


def standard_form(base: float, head_dim: int, n: int, offset: int) -> tuple[float, float]:
    """(theta_a, c_a) of an axis of n pairs at `offset`: its pairs turn at c_a * theta_a^(-2m / 2n)."""
    return base ** (6.0 * n / head_dim), base ** (-2.0 * offset / head_dim)


@dataclass(frozen=True)
class IdsLayout:
    """How the module takes its position ids.

    axes_first:   ids [3, B, N] (a [B, N] tensor stands for the same index on every axis); else [B, N, 3].
    device_dtype: forward(position_ids, device, dtype) -> tables of that dtype; else forward(position_ids)."""

    axes_first: bool = False
    device_dtype: bool = False

    def to_last(self, position_ids: Tensor) -> Tensor:
        """The ids as [B, N, 3]."""
        if not self.axes_first:
            return position_ids
        if position_ids.dim() == 2:
            return position_ids.unsqueeze(-1).expand(-1, -1, 3)
        return position_ids.permute(1, 2, 0)

    def call(self, module: nn.Module, ids_last: Tensor):
        """The module on ids given as [B, N, 3], called with this signature (float32 tables)."""
        ids = ids_last.permute(2, 0, 1) if self.axes_first else ids_last
        return module(ids, ids.device, torch.float32) if self.device_dtype else module(ids)


@dataclass(frozen=True)
class GridArgument:
    """The scale from the generated item's patch grid (frames, rows, columns): the first entry of the model's
    forward argument `argument` (host integers). Text and conditioning never enter it."""

    argument: str = "vision_token_shapes"

    def spans(self, captured, pos: Tensor, owner: str) -> tuple[Tensor, None]:
        if not captured:
            raise ValueError(f"{owner} was called without {self.argument!r}")
        grid = [int(s) for s in captured[0]]
        return spans_on(grid, pos.dtype, pos.device), None


@dataclass(frozen=True)
class TokenRole:
    """The scale from the spans of the tokens whose forward argument `argument` ([B, N]) equals `role`: the
    generated image's, so caption and padding tokens never set it. None on the call: every token counts."""

    argument: str = "indicator"
    role: int = 2

    def spans(self, captured, pos: Tensor, owner: str) -> tuple[Tensor, Tensor]:
        image = (captured == self.role) if captured is not None else torch.ones_like(pos[..., 0], dtype=torch.bool)
        # On the device (no host sync); no image token gives spans 0: plain RoPE.
        anywhere = image.any()
        zero = torch.zeros((), dtype=pos.dtype, device=pos.device)
        spans = [torch.ones((), dtype=pos.dtype, device=pos.device)]
        for a in SPATIAL:
            hi = torch.where(image, pos[..., a], -torch.inf).amax()
            lo = torch.where(image, pos[..., a], torch.inf).amin()
            spans.append(torch.where(anywhere, hi - lo + 1, zero))
        return torch.stack(spans), image


@dataclass(frozen=True)
class InterleavedMRope:
    """An interleaved-MRoPE module at `Family.module`.

    stock:       qualified class name of the module (another is refused);
    sections:    the module's attribute holding (n_frame, n_rows, n_cols);
    scale:       where the generated grid comes from (GridArgument, TokenRole);
    ids:         the module's ids layout and signature;
    token_times: the time argument lists one value per noisy generated token of the call's one sample (else one
                 per sample, or [B, N] per token); the noisiest is taken;
    equal_axes:  rows and columns have as many pairs, as the row's released model has; another split is a
                 module the row does not describe;
    theta:       the model config's field holding the base (the module keeps only its inv_freq);
    time_scale:  a config field the model multiplies its time argument by, which must undo the row's divide_by."""

    stock: str
    sections: str
    scale: Union[GridArgument, TokenRole]
    ids: IdsLayout = IdsLayout()
    token_times: bool = False
    equal_axes: bool = False
    theta: str = "rope_theta"
    time_scale: str | None = None

    def describe(self) -> str:
        return "interleaved MRoPE (frame / text, rows, columns), (cos, sin) halves"

    def install(self, adapter) -> None:
        model, family = adapter.model, adapter.family
        owner = f"{type(model).__name__}.{family.module}"
        original = getattr(model, family.module, None)
        if original is None or isinstance(original, DyPEMRope):
            raise RuntimeError(f"{owner} is missing or already a DyPE embedding (a copy of a patched model?)")
        if qualified_name(type(original)) != self.stock:
            raise TypeError(
                f"{owner} is {qualified_name(type(original))}, not {self.stock} that the {family.name} row describes"
            )
        if self.time_scale is not None:
            factor = float(getattr(model.config, self.time_scale))
            if not math.isclose(factor * family.time.divide_by, 1.0, rel_tol=1e-9):
                raise TypeError(
                    f"{type(model).__name__}.config.{self.time_scale} = {factor}: the {family.name} row reads t "
                    f"as the {family.time.argument} / {family.time.divide_by:g}"
                )
        head_dim, sections = layout_of(original, owner, self.sections, self.equal_axes)
        base = float(getattr(model.config, self.theta))
        probe(original, owner, head_dim, sections, base, self.ids)
        pairs = axis_pairs(head_dim, sections)
        forms = {a: standard_form(base, head_dim, len(pairs[a]), a) for a in SPATIAL}
        base_lens = adapter.axis_base_lens(3)
        time, scale, ids_layout, token_times = family.time, self.scale, self.ids, self.token_times
        half = head_dim // 2

        def rescaled(position_ids: Tensor, stock: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            step = adapter.step
            if step.timestep is None:
                raise adapter.outside_forward()
            device = position_ids.device
            dtype = freq_dtype(device)
            pos = ids_layout.to_last(position_ids).to(dtype)  # [B, N, 3]; whole numbers below 2^24: exact
            batch, length = pos.shape[:2]
            spans, image = scale.spans(step.ids, pos, type(model).__name__)
            scales = adapter.axis_scales(spans)
            t = diffusion_times(
                noisiest(step.timestep, image, token_times, time.reverse, time.divide_by),
                divide_by=time.divide_by, reverse=time.reverse, dtype=dtype, device=device,
            )
            step.t, step.scales = t, scales
            t_b = t.reshape(-1)  # [B] or [1]: one plan per sample
            new_cos = torch.zeros(batch, length, half, dtype=dtype, device=device)
            new_sin = torch.zeros_like(new_cos)
            moved = torch.zeros(t_b.shape[0], half, dtype=torch.bool, device=device)
            for a in SPATIAL:
                n, (theta_a, c_a) = len(pairs[a]), forms[a]
                index = torch.arange(a, 3 * n, 3, device=device)
                plan = build_plan((2 * n,), theta_a, scales[a : a + 1], t_b, adapter.cfg, (base_lens[a] * c_a,))
                plain = plain_plan((2 * n,), theta_a, device, dtype)
                hit = (plan.inv_freq != plain.inv_freq) | (plan.mscale != 1)  # [B or 1, n]
                angle = pos[..., a].unsqueeze(-1) * (plan.inv_freq * c_a).unsqueeze(1)  # [B, N, n]
                ms = plan.mscale.unsqueeze(1)
                new_cos = new_cos.index_copy(-1, index, (angle.cos() * ms).expand(batch, length, n))
                new_sin = new_sin.index_copy(-1, index, (angle.sin() * ms).expand(batch, length, n))
                moved = moved.index_copy(-1, index, hit.expand(t_b.shape[0], n))
            mask = torch.cat([moved, moved], dim=-1).unsqueeze(1)  # [B or 1, 1, D]: rotate-half
            cos, sin = stock
            return (
                torch.where(mask, torch.cat([new_cos, new_cos], dim=-1).to(cos.dtype), cos),
                torch.where(mask, torch.cat([new_sin, new_sin], dim=-1).to(sin.dtype), sin),
            )

        swap_module(adapter, family.module, DyPEMRope(original, rescaled, (self.sections, "head_dim")))
        adapter.hook_calls(adapter.capture(time.argument, scale.argument))


def noisiest(timestep, image: Tensor | None, token_times: bool, reverse: bool, divide_by: float):
    """The time argument reduced to one value per sample: a per-token time ([B, N], or [tokens] of one sample
    where `token_times`) at the generated tokens' noisiest; other tokens count as clean, so they never set it."""
    if not isinstance(timestep, Tensor) or not (timestep.dim() == 2 or token_times and timestep.dim() == 1):
        return timestep
    per_token = timestep if timestep.dim() == 2 else timestep.unsqueeze(0)
    if image is not None:
        per_token = per_token.masked_fill(~image, divide_by if reverse else 0.0)
    return per_token.amin(dim=-1) if reverse else per_token.amax(dim=-1)


def layout_of(module, owner: str, attribute: str, equal_axes: bool) -> tuple[int, tuple[int, int, int]]:
    """(head_dim, sections) of the module, with a clear error where it lacks them or they do not fit the head."""
    try:
        head_dim = 2 * int(module.inv_freq.shape[0])
        sections = tuple(int(s) for s in getattr(module, attribute))
    except (AttributeError, TypeError, ValueError, IndexError) as err:
        raise TypeError(f"{owner} is not an interleaved multimodal RoPE module ({err})") from None
    if len(sections) != 3:
        raise TypeError(f"{owner}: mrope sections {list(sections)}, expected 3 (frame / text, rows, columns)")
    if equal_axes and (sections[1] != sections[2] or sections[1] < 2):
        raise TypeError(f"mrope sections {list(sections)}: rows and columns need the same pair count (>= 2)")
    if min(sections[1:]) < 1 or any(3 * sections[a] - 3 + a >= head_dim // 2 for a in SPATIAL):
        raise TypeError(
            f"{owner}: mrope sections {list(sections)} do not fit the {head_dim // 2} pairs of the head "
            "interleaved by 3"
        )
    return head_dim, sections


def probe(module: nn.Module, owner: str, head_dim: int, sections, base: float, layout: IdsLayout) -> None:
    """The stock module on a few distinct positions (float32 angles below 30: a few units of their last place)
    must give rotate-half (cos, sin) [B, N, D] of this layout."""
    device = module.inv_freq.device
    ids = torch.stack([torch.arange(4, device=device) * (a + 2) + 1 + a for a in range(3)], dim=-1)
    ids = torch.stack([ids, ids.flip(0)])  # [2, 4, 3]: every axis at its own positions
    try:
        with torch.no_grad():
            out = layout.call(module, ids)
    except Exception as err:
        raise TypeError(f"{owner} cannot be called with position ids as its row describes: {err}") from err
    half = head_dim // 2
    axis = torch.zeros(half, dtype=torch.long, device=device)
    for a, js in axis_pairs(head_dim, sections).items():
        axis[js] = a
    omega = base ** (-2.0 * torch.arange(half, dtype=torch.float64, device=device) / head_dim)
    angle = ids.double().index_select(-1, axis) * omega  # [2, 4, D/2]
    want = [torch.cat([x, x], dim=-1) for x in (angle.cos(), angle.sin())]
    shapes_ok = isinstance(out, tuple) and len(out) == 2 and all(o.shape == w.shape for o, w in zip(out, want))
    if not shapes_ok or not all(torch.allclose(o.double(), w, rtol=0, atol=1e-5) for o, w in zip(out, want)):
        raise TypeError(
            f"{owner} does not return (cos, sin) [B, N, D] of interleaved MRoPE with theta {base} and sections "
            f"{list(sections)} in halves; this row does not describe the module"
        )


class DyPEMRope(nn.Module):
    """Drop-in for the stock module: calls it, then gives DyPE's numbers to the pairs DyPE moves."""

    def __init__(self, original: nn.Module, rescaled, mirrored: tuple[str, ...]) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a submodule: the module tree stays as it was
        for name in mirrored:
            if hasattr(original, name):
                setattr(self, name, getattr(original, name))
        self._rescaled = rescaled

    @property
    def inv_freq(self) -> Tensor:
        return self.original.inv_freq

    def _apply(self, fn, recurse=True):
        self.original._apply(fn, recurse)  # model.to() reaches the stock module's inv_freq
        return super()._apply(fn, recurse)

    def forward(self, position_ids: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        # The class's forward, not the instance's: a context-parallel hook wrapping the original's forward is
        # carried onto this module (adapters/parallel.py) and must not split the sequence twice.
        stock = type(self.original).forward(self.original, position_ids, *args, **kwargs)
        return self._rescaled(position_ids, stock)
