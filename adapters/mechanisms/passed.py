"""Mechanism for models handed their RoPE tables: the pipeline builds them and passes them to the transformer's
forward as an argument (`image_rotary_emb`): CogVideoX's (cos, sin) of every token (:class:`PassedGridTables`),
Allegro's (cos, sin) per axis looked up by position ids (:class:`PassedAxisTables`).

There is no position-encoding module to replace. Instead a forward pre-hook on each transformer block takes the
tables the model passes it (those its caller passed) and returns the block's arguments with those tables followed
by DyPE, built once per model call by the first block. The work runs inside the model's forward, so a compiled
model stays one graph; the model's own pre-hook only stores the timestep and the latent's grid. In the tables,
every pair DyPE moves in this call (an axis whose grid is beyond its base, a pair whose frequency or temperature
the schedule changes) gets DyPE's numbers at the row's integer positions (float64 where the device has it, cast
to the stock dtype); every other pair keeps the caller's number (torch.where on the device, no host sync). At or
below the base grid the blocks therefore get exactly the tables the pipeline made, bit for bit.

The grid is read from the latent's shape (host integers), so the scale never depends on text tokens, which the
tables do not cover. The tables' shape is checked on every call (a shape, free to read): tables for another
number of tokens or channels are refused with the reason, never rescaled at the wrong positions. At install the
row's layout is checked against the function the pipeline builds its tables with (`probe`).
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from dype_rope.rope import check_axes_dims, freq_dtype, plain_plan
from dype_rope.timestep import diffusion_time

from ..base import CallHook, spans_on
from ..video import grid_tables

# A probe: model -> (grid (frames, rows, columns), the pipeline's own tables for that grid, in the row's format).
Probe = Callable[[Any], Optional[tuple[tuple[int, int, int], tuple[Tensor, Tensor]]]]


@dataclass(frozen=True)
class PassedGridTables:
    """Tables (cos, sin) [frames * rows * columns, D] passed as forward argument `argument`, tokens frames-major,
    pairs interleaved, each axis a contiguous block of channels (`axes_dims(config)`), plain RoPE of `theta` at
    the integer positions of the latent grid.

    latent:       the forward argument holding the latent; `latent_dims` are its (frames, height, width) dims.
    blocks:       the model's list of transformer blocks, each taking the tables as its argument `argument`.
    patch:        config -> (frames, rows, columns) latent pixels per token.
    refusal:      config -> why this configuration cannot be rescaled (None where it can).
    probe:        see Probe: the pipeline's tables of a small grid, compared with plain RoPE at install.
    """

    argument: str
    latent: str
    blocks: str
    latent_dims: tuple[int, int, int]
    patch: Callable[[Any], tuple[int, int, int]]
    axes_dims: Callable[[Any], Sequence[int]]
    theta: float = 10000.0
    refusal: Callable[[Any], Optional[str]] = lambda config: None
    probe: Optional[Probe] = None

    def describe(self) -> str:
        """The mechanism, for the supported-models table."""
        return f"tables passed as `{self.argument}`, (cos, sin) interleaved"

    def install(self, adapter) -> None:
        model = adapter.model
        config = getattr(model, "config", None)
        owner = type(model).__name__
        reason = self.refusal(config)
        if reason is not None:
            raise TypeError(f"dype_rope does not patch this {owner}: {reason}")
        axes_dims = check_axes_dims(self.axes_dims(config))
        patch = tuple(int(p) for p in self.patch(config))
        self._check_probe(model, owner, axes_dims)
        blocks = getattr(model, self.blocks, None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise TypeError(f"{owner}.{self.blocks} is not the list of transformer blocks this row expects")
        read_latent = _reader(model.forward, self.latent)
        read_tables = _reader(type(blocks[0]).forward, self.argument, bound=False)
        time = adapter.family.time
        base_lens = self._base_lens(adapter, config)
        capture = adapter.capture(time.argument)
        # This call's tables after DyPE, made by the first block and reused by the others: per patch and per
        # thread, emptied when the call ends.
        made = threading.local()

        def begin(args: tuple, kwargs: dict) -> None:
            capture(args, kwargs)
            latent = read_latent(args, kwargs)
            # host integers from the shape; frames padded up as the pipeline pads them to whole patches
            adapter.step.grid = tuple(-(-latent.shape[d] // p) for d, p in zip(self.latent_dims, patch))
            made.tables = None

        def rescaled(tables):
            step = adapter.step
            if step.timestep is None or step.grid is None:
                raise adapter.outside_forward()
            grid = step.grid
            device = self._check_tables(tables, grid, axes_dims, owner)
            dtype = freq_dtype(device)
            t = diffusion_time(step.timestep, divide_by=time.divide_by, reverse=time.reverse, dtype=dtype,
                               device=device)
            plain = plain_plan(axes_dims, self.theta, device, dtype)
            plan = adapter.plan_step(t, spans_on(grid, dtype, device), axes_dims, self.theta, base_lens)
            moved = (plan.inv_freq != plain.inv_freq) | (plan.mscale != 1)  # [D/2]: pairs DyPE moves in this call
            return self._rescaled(tables, grid, plan, moved, axes_dims, config)

        def block_pre(module, args, kwargs):
            if getattr(made, "tables", None) is None:
                made.tables = rescaled(read_tables(args, kwargs))
            return _replaced(args, kwargs, read_tables, made.tables)

        def end(module, args, kwargs, output):
            made.tables = None

        adapter.hook_calls(begin)
        h_end = model.register_forward_hook(CallHook(end), with_kwargs=True, always_call=True)
        adapter.on_remove(h_end.remove)
        for block in blocks:
            handle = block.register_forward_pre_hook(CallHook(block_pre), with_kwargs=True)
            adapter.on_remove(handle.remove)

    def _base_lens(self, adapter, config) -> tuple[float, ...]:
        """YaRN's base length of every axis, in the units of the tables' positions (tokens here)."""
        return adapter.axis_base_lens(3)

    def _check_tables(self, tables, grid, axes_dims, owner: str) -> torch.device:
        """Refuse tables that are not (cos, sin) [F * H * W, D] of this latent; their device otherwise."""
        if not (isinstance(tables, (tuple, list)) and len(tables) == 2 and all(map(torch.is_tensor, tables))):
            raise ValueError(
                f"{owner} was called with {self.argument}={type(tables).__name__}; DyPE rescales the (cos, sin) "
                "tables its pipeline passes: build them as the pipeline does"
            )
        cos, sin = tables
        want = (grid[0] * grid[1] * grid[2], sum(axes_dims))
        if tuple(cos.shape) != want or sin.shape != cos.shape:
            raise ValueError(
                f"{self.argument} holds tables of shape {tuple(cos.shape)} / {tuple(sin.shape)}, but a latent "
                f"of {grid[0]} x {grid[1]} x {grid[2]} tokens and heads of {want[1]} channels need {want}"
            )
        return cos.device

    def _rescaled(self, tables, grid, plan, moved: Tensor, axes_dims, config):
        """The tables with DyPE's numbers on the moved pairs (interleaved channels), the caller's elsewhere."""
        cos, sin = tables
        new_cos, new_sin = grid_tables(grid, plan, axes_dims)
        mask = moved.repeat_interleave(2)  # [D]
        return type(tables)((torch.where(mask, new_cos.to(cos.dtype), cos), torch.where(mask, new_sin.to(sin.dtype), sin)))

    def _check_probe(self, model, owner: str, axes_dims: Sequence[int]) -> None:
        """The pipeline's own tables of a small grid must be plain RoPE on this row's layout."""
        if self.probe is None:
            return
        probed = self.probe(model)
        if probed is None:
            return
        grid, (cos, sin) = probed
        plan = plain_plan(axes_dims, self.theta, device=cos.device)
        want_cos, want_sin = grid_tables(grid, plan, axes_dims)
        ok = cos.shape == want_cos.shape and sin.shape == want_sin.shape
        if not ok or not (torch.allclose(cos.float(), want_cos, atol=1e-6) and torch.allclose(sin.float(), want_sin, atol=1e-6)):
            raise TypeError(
                f"the tables {owner}'s pipeline builds are not interleaved RoPE with theta={self.theta} and "
                f"axes_dims={list(axes_dims)} at the latent's integer positions; this row does not describe the model"
            )


def _reader(forward: Callable, name: str, bound: bool = True) -> Callable[[tuple, dict], Any]:
    """Read argument `name` from a call's (args, kwargs); `bound=False` for a function still taking self."""
    params = [p.name for p in inspect.signature(forward).parameters.values() if p.kind != p.VAR_KEYWORD]
    names = params if bound else params[1:]
    if name not in names:
        raise TypeError(f"{forward.__qualname__} has no argument {name!r}")
    index = names.index(name)

    def read(args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        return args[index] if index < len(args) else None

    read.name, read.index = name, index
    return read


def _replaced(args: tuple, kwargs: dict, reader, value) -> tuple[tuple, dict]:
    """The call's (args, kwargs) with the argument `reader` reads set to `value`, where the caller put it."""
    if reader.name in kwargs or reader.index >= len(args):
        return args, {**kwargs, reader.name: value}
    return (*args[: reader.index], value, *args[reader.index + 1:]), kwargs



@dataclass(frozen=True)
class PassedAxisTables(PassedGridTables):
    """Allegro's format: argument = ((cos, sin) of frames, of rows, of columns), (position ids of every token per
    axis). Each axis' tables [n_a, d_a] hold positions 0 .. n_a - 1 divided by the model's `position_scale(config)`
    (its interpolation_scale_t / h / w), pairs in halves (channel j and j + d_a/2); the ids index them.

    Plain RoPE over positions p / c: DyPE's schedule applies with its base length in those units, L / c."""

    position_scale: Callable[[Any], Sequence[float]] = lambda config: (1.0, 1.0, 1.0)

    def describe(self) -> str:
        return f"per-axis tables passed as `{self.argument}`, (cos, sin) halves"

    def _base_lens(self, adapter, config) -> tuple[float, ...]:
        return tuple(b / float(c) for b, c in zip(adapter.axis_base_lens(3), self.position_scale(config)))

    def _check_tables(self, tables, grid, axes_dims, owner: str) -> torch.device:
        try:
            (axis_tables, ids) = tables
            shapes = [(tuple(c.shape), tuple(s.shape)) for c, s in axis_tables]
        except (TypeError, ValueError, AttributeError):
            raise ValueError(
                f"{owner} was called with {self.argument} not of the form ((cos, sin) per axis, position ids); "
                "build it as the pipeline does"
            ) from None
        want = [((n, d), (n, d)) for n, d in zip(grid, axes_dims)]
        if shapes != want:
            raise ValueError(
                f"{self.argument} holds per-axis tables of shapes {shapes}, but a latent of {grid[0]} x {grid[1]} x "
                f"{grid[2]} tokens and axes of {list(axes_dims)} channels need {want}"
            )
        return axis_tables[0][0].device

    def _rescaled(self, tables, grid, plan, moved: Tensor, axes_dims, config):
        axis_tables, ids = tables
        scales = tuple(float(c) for c in self.position_scale(config))  # host floats from the model's config
        out, start = [], 0
        for a, ((cos, sin), n, d) in enumerate(zip(axis_tables, grid, axes_dims)):
            pairs = slice(start, start + d // 2)
            start += d // 2
            # the pipeline's positions: float32 linspace 0 .. n - 1 divided by the scale in float32
            pos = torch.arange(n, dtype=torch.float32, device=cos.device) / scales[a]
            angles = pos.to(plan.inv_freq.dtype).unsqueeze(-1) * plan.inv_freq[pairs]
            m = plan.mscale[pairs]
            new_cos, new_sin = (torch.cat([x * m, x * m], dim=-1) for x in (angles.cos(), angles.sin()))
            mask = torch.cat([moved[pairs], moved[pairs]])  # [d]: pair j at channels j and j + d/2
            out.append((torch.where(mask, new_cos.to(cos.dtype), cos), torch.where(mask, new_sin.to(sin.dtype), sin)))
        return (tuple(out), ids)

    def _check_probe(self, model, owner: str, axes_dims: Sequence[int]) -> None:
        if self.probe is None:
            return
        grid, (axis_tables, _) = self.probe(model)
        scales = tuple(float(c) for c in self.position_scale(model.config))
        ok = len(axis_tables) == 3
        for a, ((cos, sin), n, d) in enumerate(zip(axis_tables, grid, axes_dims)):
            plain = plain_plan((d,), self.theta, device=cos.device)
            angles = (torch.arange(n, dtype=torch.float64, device=cos.device) / scales[a]).unsqueeze(-1) * plain.inv_freq
            want = torch.cat([angles.cos(), angles.cos()], -1), torch.cat([angles.sin(), angles.sin()], -1)
            ok = ok and cos.shape == want[0].shape and all(
                torch.allclose(x.double(), w, atol=1e-6) for x, w in zip((cos, sin), want)
            )
        if not ok:
            raise TypeError(
                f"the tables {owner}'s pipeline builds are not per-axis RoPE with theta={self.theta}, axes_dims="
                f"{list(axes_dims)} and positions divided by {scales}, in halves; this row does not describe the model"
            )
