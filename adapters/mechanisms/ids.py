"""The ids mechanism: a RoPE module that maps position ids [..., L, n_axes] to tables (FLUX-style PosEmbed,
BFL-style EmbedND and their many copies).

The row's :class:`Ids` names the table format the module returns (:data:`FORMATS`); at install the stock module
is called on a few probe positions and its output must equal plain RoPE in that format with the module's own
`theta` and `axes_dim`, or the patch is refused with the difference named. The probe also learns the singleton
axes the module inserts around the table (a head axis, nunchaku's [B, 1, L, D/2, 1, 2]), so the replacement
returns exactly the stock layout.

The replacement calls the stock module and keeps its number on every pair whose axis is not stretched in this
call (torch.where on the device, no host sync): at or below the base grid the model is bit for bit what it was,
in whatever precision the module computes. Stretched pairs take DyPE's frequencies, computed in float64 where
the device has it and cast to the stock dtype.

The scale comes from the generated image's own ids: the model's image-ids forward argument where it has one, else
the ids of the call's first embedding (models that build their ids themselves and embed the generated image
first). One plan per model call, shared by every embedding of the call (text, image, reference images). Extents
are token counts on the first index of axis 0 (`image_spans`), so reference images on later indices and caption
tokens never set the scale; where axis 0 is a spatial axis too (`frame_axis=False`) every token counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims, plain_plan
from dype_rope.rope_formats import rope_angles
from dype_rope.timestep import diffusion_time, diffusion_times

from ..base import image_spans
from ..embednd import inserted_axes
from ..parallel import carry_parallel_hooks


def _interleave(x: Tensor) -> Tensor:
    return x.repeat_interleave(2, dim=-1)


def _halves(x: Tensor) -> Tensor:
    return torch.cat([x, x], dim=-1)


def _per_matrix(x: Tensor) -> Tensor:
    return x[..., None, None].expand(*x.shape, 2, 2)


def _per_entry(x: Tensor) -> Tensor:
    return x[..., None].expand(*x.shape, 2)


@dataclass(frozen=True)
class Format:
    """How per-pair values (m cos, m sin) [..., L, D/2] become the module's output tensors: `build(cos, sin)`
    gives them; `spread(x)` lays one per-pair value out as every element of that pair (for the stretched mask)."""

    build: Callable[[Tensor, Tensor], tuple[Tensor, ...]]
    spread: Callable[[Tensor], Tensor]
    is_tuple: bool  # the module returns a tuple of the built tensors, not one tensor


FORMATS: dict[str, Format] = {
    # (cos, sin) [..., L, D], both channels of a pair equal: FluxPosEmbed and its copies
    "cos_sin_interleaved": Format(lambda c, s: (_interleave(c), _interleave(s)), _interleave, True),
    # (cos, sin) [..., L, D], pair j = channels (j, j + D/2): rotate_half models
    "cos_sin_half": Format(lambda c, s: (_halves(c), _halves(s)), _halves, True),
    # complex freqs_cis [..., L, D/2]
    "complex": Format(lambda c, s: (torch.complex(c, s),), lambda x: x, False),
    # rotation matrices [..., L, D/2, 2, 2] = [[cos, -sin], [sin, cos]]: BFL's EmbedND, PRX
    "matrices": Format(
        lambda c, s: (torch.stack([c, -s, s, c], dim=-1).unflatten(-1, (2, 2)),), _per_matrix, False
    ),
    # [..., L, D/2, 2] = (sin, cos): nunchaku's FLUX (which inserts a singleton before the last axis)
    "sin_cos": Format(lambda c, s: (torch.stack([s, c], dim=-1),), _per_entry, False),
}


@dataclass(frozen=True)
class Ids:
    """The layout of an ids-style RoPE module, declared by a family row (adapters/table.py).

    format:     a key of FORMATS.
    image_ids:  the model's forward argument holding the generated image's ids (None: the ids of the call's first
                embedding, for models that build the ids themselves and embed the generated image first).
    frame_axis: axis 0 of the ids is a frame / modality index (FLUX); False where every axis is spatial (PRX).
    ids_rank:   2 for ids [L, n_axes], 3 for ids [B, L, n_axes]: how the probe calls the module. With 3 the
                tables carry a batch dimension and a mixed-time batch gets one plan per sample.
    integer_ids: the module indexes precomputed tables with its ids (Bria-Fibo 2): the probe passes integers.
    axes_attr:  the module's attribute holding the channels per axis ("axes_dim", or "axes_dims").
    """

    format: str = "cos_sin_interleaved"
    image_ids: str | None = "img_ids"
    frame_axis: bool = True
    ids_rank: int = 2
    integer_ids: bool = False
    axes_attr: str = "axes_dim"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown ids format {self.format!r}: expected one of {sorted(FORMATS)}")
        if self.ids_rank not in (2, 3):
            raise ValueError(f"ids_rank is 2 (ids [L, n]) or 3 (ids [B, L, n]), got {self.ids_rank}")

    def install(self, adapter) -> None:
        install_ids(self, adapter)

    def describe(self) -> str:
        return f"ids, {self.format}"


def _device(module) -> torch.device:
    if not isinstance(module, nn.Module):
        return torch.device("cpu")
    tensor = next(chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _squeezed(x: Tensor, axes: Sequence[int]) -> Tensor:
    for axis in sorted(axes, reverse=True):
        x = x.squeeze(axis)
    return x


def _unsqueezed(x: Tensor, axes: Sequence[int]) -> Tensor:
    for axis in axes:
        x = x.unsqueeze(axis)
    return x


def dype_tables(fmt: Format, ids: Tensor, plan: RopePlan) -> tuple[Tensor, ...]:
    """The tables of `plan` at `ids` in format `fmt`, in the plan's dtype (float64 where the device has it)."""
    angles = rope_angles(ids, plan)  # [..., L, D/2]
    mscale = plan.mscale.unsqueeze(-2)
    return fmt.build(angles.cos() * mscale, angles.sin() * mscale)


def probe(spec: Ids, module: nn.Module, axes_dims: Sequence[int], theta: float) -> list[list[int]]:
    """Call the stock module on a few positions; check it returns plain RoPE in the declared format and learn the
    singleton axes it adds around each output tensor."""
    fmt, name = FORMATS[spec.format], type(module).__name__
    device, n = _device(module), len(axes_dims)
    # Distinct, non-trivial positions on every axis (up to 19): a wrong theta, axis order or pair layout shows.
    dtype = torch.long if spec.integer_ids else torch.float32
    ids = torch.stack([torch.arange(4, dtype=dtype, device=device) * (a + 2) + 1 for a in range(n)], -1)
    if spec.ids_rank == 3:
        ids = torch.stack([ids, ids.flip(0)])
    try:
        with torch.no_grad():
            out = module(ids)
    except Exception as err:
        raise TypeError(
            f"{name} cannot be called with position ids {tuple(ids.shape)} as its family row declares: {err}"
        ) from err
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    want = dype_tables(fmt, ids, plain_plan(axes_dims, theta, device=device))
    where = f"{name} (theta={theta}, axes_dim={list(axes_dims)}, format {spec.format!r})"
    if isinstance(out, (tuple, list)) != fmt.is_tuple or len(outs) != len(want):
        raise TypeError(f"{where}: the module returns {type(out).__name__} of {len(outs)}, not that format")
    axes = []
    for got, ref in zip(outs, want):
        inserted = inserted_axes(tuple(got.shape), tuple(ref.shape)) if isinstance(got, Tensor) else None
        if inserted is None:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise TypeError(f"{where}: the module returns shape {shape}, the format gives {tuple(ref.shape)}")
        error = (_squeezed(got, inserted).to(ref.dtype) - ref).abs().max()
        if not error <= 1e-5:
            raise TypeError(f"{where}: the module's tables differ from plain RoPE in that format by {float(error):.3g}")
        axes.append(inserted)
    return axes


def image_extents(ids: Tensor, frame_axis: bool) -> Tensor:
    """Per-axis token extents of the generated image in ids [L, n] / [B, L, n] (see base.image_spans)."""
    if frame_axis:
        return image_spans(ids)
    ids = ids[0] if ids.dim() == 3 else ids
    return image_spans(torch.cat([torch.zeros_like(ids[:, :1]), ids], dim=-1))[1:]


class PlainEncoding:
    """The replacement of a RoPE encoding that is a plain object, not a module (Bria-Fibo 2's RopeEmbedder): it stays
    a plain object, so the model's module tree (and state_dict) is unchanged."""

    def __init__(self, encoding: "DyPEIdsEncoding") -> None:
        self.encoding = encoding
        for attr in ("theta", "axes_dim", "axes_dims", "axes_lens"):
            if hasattr(encoding.original, attr):
                setattr(self, attr, getattr(encoding.original, attr))

    def __call__(self, ids: Tensor):
        return self.encoding(ids)


class DyPEIdsEncoding(nn.Module):
    """Drop-in for an ids-style RoPE module: forward(ids) -> the stock output, with DyPE's numbers on every pair
    whose axis is stretched in this call."""

    def __init__(self, original: nn.Module, fmt: Format, axes: list[list[int]], plan_of_call, plain=False) -> None:
        super().__init__()
        for attr in ("dim", "theta", "axes_dim", "axes_dims"):
            if hasattr(original, attr):
                setattr(self, attr, getattr(original, attr))
        # a plain attribute, not a submodule: the module tree (state_dict, LoRA keys) stays as it was
        object.__setattr__(self, "original", original)
        self._fmt, self._axes, self._plan_of_call = fmt, axes, plan_of_call
        self._plain = plain  # method="none": plain RoPE is the stock table itself, in the stock precision

    def forward(self, ids: Tensor):
        stock = self.original(ids)
        if self._plain:
            return stock
        stocks = tuple(stock) if self._fmt.is_tuple else (stock,)
        plan, scales = self._plan_of_call(ids)
        stretched = scales.index_select(-1, plan.pair_axis) > 1  # [D/2]
        mask = self._fmt.spread(stretched)
        out = []
        for s, d, axes in zip(stocks, dype_tables(self._fmt, ids, plan), self._axes):
            kept = _squeezed(s, axes)
            out.append(_unsqueezed(torch.where(mask, d.to(kept.dtype), kept), axes))
        return tuple(out) if self._fmt.is_tuple else out[0]

    def extra_repr(self) -> str:
        return f"theta={getattr(self, 'theta', None)}, axes_dim={list(getattr(self, 'axes_dim', []))}"


def _resolve(model: nn.Module, path: str) -> tuple[nn.Module, str, nn.Module]:
    parent_name, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    module = getattr(parent, attr, None)
    if not callable(module):
        raise TypeError(f"{type(model).__name__}.{path} is {type(module).__name__}, not a RoPE module")
    return parent, attr, module


def install_ids(spec: Ids, adapter) -> None:
    family, model = adapter.family, adapter.model
    parent, attr, original = _resolve(model, family.module)
    owner = f"{type(model).__name__}.{family.module}"
    if isinstance(original, (DyPEIdsEncoding, PlainEncoding)):
        raise RuntimeError(f"{owner} is already a DyPE embedding (a copy of a patched model?)")
    if not (hasattr(original, "theta") and hasattr(original, spec.axes_attr)):
        raise TypeError(
            f"{owner} ({type(original).__name__}) has no `theta` and `{spec.axes_attr}`: not an ids-style module"
        )
    axes_dims = check_axes_dims(getattr(original, spec.axes_attr))
    if max(family.rescaled_axes) >= len(axes_dims):
        raise ValueError(f"{owner} has {len(axes_dims)} RoPE axes; the row rescales axes {family.rescaled_axes}")
    theta = float(original.theta)
    fmt = FORMATS[spec.format]
    axes = probe(spec, original, axes_dims, theta)
    base_lens = adapter.axis_base_lens(len(axes_dims))
    time = family.time
    per_sample = spec.ids_rank == 3  # the tables carry a batch dimension: one plan per sample

    def plan_of_call(ids: Tensor) -> tuple[RopePlan, Tensor]:
        step = adapter.step  # the calling thread's
        if step.timestep is None:
            raise adapter.outside_forward()
        if step.plan is not None:  # one plan per model call, however often it embeds
            return step.plan, step.scales
        spans = image_extents(step.ids if step.ids is not None else ids, spec.frame_axis)
        read = diffusion_times if per_sample else diffusion_time
        t = read(
            step.timestep, divide_by=time.divide_by, reverse=time.reverse, dtype=spans.dtype, device=spans.device
        )
        plan = adapter.plan_step(t, spans, axes_dims, theta, base_lens)  # kept for the rest of the call
        return plan, step.scales

    replacement = DyPEIdsEncoding(original, fmt, axes, plan_of_call, plain=adapter.cfg.method == "none")
    if not isinstance(original, nn.Module):
        replacement = PlainEncoding(replacement)
    carry_parallel_hooks(original, replacement)
    setattr(parent, attr, replacement)
    adapter.on_remove(lambda: setattr(parent, attr, original))
    adapter.on_remove(lambda: carry_parallel_hooks(replacement, original))
    adapter.hook_calls(adapter.capture(time.argument, spec.image_ids))


__all__ = ["FORMATS", "Format", "Ids", "DyPEIdsEncoding"]
