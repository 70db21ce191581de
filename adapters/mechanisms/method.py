"""The method mechanism of the family table: models whose RoPE tables come from a method of the model itself.

Some DiTs have no RoPE submodule: a method of the model builds the tables (JoyImage-Edit's
`get_rotary_pos_embed(vis_rope_size, txt_rope_size)`, JoyImage-Edit-Plus' `_get_rotary_pos_embed_for_range(start,
stop)`). A row names the method, how its channels split over the axes and its theta (read off the model), the
positions of the tokens of one call (from the call's own arguments), how many tables one call returns and their
format (:mod:`adapters.mechanisms.grid_formats`), and how the generated image's token grid is read from the
model's forward arguments (host integers: shapes, size lists).

The replacement is set on the model instance, shadowing the class's method (never the class itself), and
`remove()` takes it away again (or puts back an instance attribute that was there before). It calls the original
method and keeps its number on every pair DyPE leaves untouched in this call (axes not stretched, YaRN's
low-frequency pairs, t = 0 for PI and NTK): a torch.where on the device, so at or below the base grid the tables
are the stock ones bit for bit. Only the pairs DyPE moves take its frequencies, computed in float64 where the
device has it and cast to the stock dtype. The tables are returned on the device of the model's timestep, where
the attention moves them anyway: t never travels to the host.

At install the method is called once on the row's probe and must return plain RoPE on the row's declared
positions and format; anything else is refused with a message rather than patched wrongly.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims, freq_dtype, plain_plan
from dype_rope.timestep import diffusion_time, diffusion_times

from ..base import argument_reader, spans_on
from .grid import check_plain_rope, pair_tables
from .grid_formats import CosSin, Format

Arguments = dict[str, Any]


@dataclass(frozen=True)
class Method:
    """The layout of one table-building model method, as a family row declares it.

    method:    the name of the model's method;
    axes_dims: model -> channels of every axis, in the method's pair order;
    theta:     model -> the RoPE base;
    positions: arguments of one call (by name, defaults filled in) -> float positions [L, n_axes] of every table
               the call returns, in order (None where the call returns None for that table);
    inputs:    the model's forward arguments `tokens` reads;
    tokens:    (model, *those arguments) -> token count of every axis of the generated image (host integers only:
               shapes, size lists), so reference images and text never set the scale;
    probe:     model -> arguments (by name) of a small call used to verify the row at install;
    format:    how the method's output holds the pairs of one table;
    parts:     1 where the method returns one table, n where it returns a tuple of n tables (any may be None);
    samples:   (model, *the inputs) -> the sample of every call of the method in one model call, in call order,
               where the model builds each sample's tables with calls of their own and stacks them (one plan per
               sample, so a batch of different times is served); None where one call serves the whole batch (one
               plan per call, such a batch refused above the base grid).
    """

    method: str
    axes_dims: Callable[[nn.Module], Sequence[int]]
    theta: Callable[[nn.Module], float]
    positions: Callable[[Arguments], tuple[Tensor | None, ...]]
    inputs: tuple[str, ...]
    tokens: Callable[..., Sequence[int]]
    probe: Callable[[nn.Module], Arguments]
    format: Format = CosSin()
    parts: int = 1
    samples: Callable[..., Sequence[int]] | None = None

    def describe(self) -> str:
        """The mechanism and output format, for the supported-models table."""
        return f"model method `{self.method}`, {self.format.describe()}"

    def install(self, adapter) -> None:
        install_method(self, adapter)


def binder(method: Callable) -> Callable[[tuple, dict], Arguments]:
    """(args, kwargs) of a call of a bound `method` -> its arguments by name, defaults filled in; resolved once."""
    params = [p for p in inspect.signature(method).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    names = [p.name for p in params]
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    def bind(args: tuple, kwargs: dict) -> Arguments:
        if len(args) > len(names):
            raise TypeError(f"{method.__qualname__} takes {len(names)} arguments, got {len(args)} positional")
        bound = dict(defaults)
        bound.update(zip(names, args))
        bound.update(kwargs)
        return bound

    return bind


def as_parts(out: Any, parts: int) -> tuple:
    """The tables of one call's output: the output itself where the method returns one table."""
    if parts == 1:
        return (out,)
    if not (isinstance(out, tuple) and len(out) == parts):
        raise TypeError(f"expected a tuple of {parts} tables, got {type(out).__name__}")
    return out


def on_device(stock: Any, device: torch.device) -> Any:
    if isinstance(stock, Tensor):
        return stock.to(device)
    return type(stock)(s.to(device) for s in stock)


class DyPEMethod:
    """Stands in for the model's method on the instance: same call, same output; the original method is called and
    its numbers kept on every pair DyPE leaves untouched in this call."""

    def __init__(
        self,
        original: Callable,
        row: Method,
        bind: Callable[[tuple, dict], Arguments],
        plan_of_call: Callable[[Tensor], tuple[RopePlan, Tensor, torch.device]],
    ) -> None:
        self.original = original
        self._row = row
        self._bind = bind
        self._plan_of_call = plan_of_call

    def __call__(self, *args, **kwargs) -> Any:
        stock = self.original(*args, **kwargs)
        row = self._row
        stock_parts = as_parts(stock, row.parts)
        positions = row.positions(self._bind(args, kwargs))
        first = next(p for p in stock_parts if p is not None)
        plan, untouched, device = self._plan_of_call(first[0] if isinstance(first, tuple) else first)
        out = []
        for part, pos in zip(stock_parts, positions):
            if part is None:
                out.append(None)
                continue
            cos, sin = pair_tables(pos.to(device), plan)
            out.append(row.format.merge(on_device(part, device), cos, sin, untouched))
        return out[0] if row.parts == 1 else tuple(out)

    def __repr__(self) -> str:
        return f"DyPE over {self._row.method}"


def probe(
    row: Method, model: nn.Module, method: Callable, bind, axes_dims: Sequence[int], theta: float, name: str
) -> None:
    """Call the stock method on the row's probe: every table must be plain RoPE on the row's positions and format."""
    kwargs = row.probe(model)
    try:
        with torch.no_grad():
            parts = as_parts(method(**kwargs), row.parts)
            positions = row.positions(bind((), kwargs))
    except Exception as err:
        raise TypeError(f"{name} cannot be called as its family row declares: {err}") from err
    for part, pos in zip(parts, positions):
        if (part is None) != (pos is None):
            raise TypeError(f"{name} returns {'no' if part is None else 'a'} table where its family row expects the other")
        if part is None:
            continue
        check_plain_rope(name, part, pos, axes_dims, theta, row.format, "method")


def install_method(row: Method, adapter) -> None:
    """Shadow the model's method with a DyPEMethod driven by this adapter's calls, on this instance only."""
    family, model = adapter.family, adapter.model
    owner = f"{type(model).__name__}.{row.method}"
    mine = vars(model).get(row.method, None)  # an instance attribute already there (put back on remove)
    if isinstance(mine, DyPEMethod):
        raise RuntimeError(f"{owner} is already a DyPE method (a copy of a patched model?)")
    declared = getattr(type(model), row.method, None)
    original = getattr(model, row.method, None)
    if not (inspect.isfunction(declared) and callable(original)):
        raise TypeError(f"{owner} is not a method of the model, which the {family.name} row describes")
    axes_dims = check_axes_dims(row.axes_dims(model))
    theta = float(row.theta(model))
    bad = [a for a in adapter.rescaled_axes if a >= len(axes_dims)]
    if bad:
        raise ValueError(f"the {family.name} row rescales axes {bad}, but the method has {len(axes_dims)} axes")
    bind = binder(declared.__get__(model))  # arguments named as the class declares them, whatever wraps it
    probe(row, model, original, bind, axes_dims, theta, owner)
    base_lens = adapter.axis_base_lens(len(axes_dims))
    time = family.time
    read_t = argument_reader(model.forward, time.argument)
    readers = [argument_reader(model.forward, name) for name in row.inputs]

    # per thread, as the step context: [the sample of each method call of this model call, the calls so far]
    order = threading.local()

    def begin(args: tuple, kwargs: dict) -> None:
        step = adapter.step
        step.clear()
        step.timestep = read_t(args, kwargs)
        values = [read(args, kwargs) for read in readers]
        known = not any(v is None for v in values)
        step.grid = tuple(int(n) for n in row.tokens(model, *values)) if known else None
        order.calls = [tuple(int(i) for i in row.samples(model, *values)), 0] if known and row.samples else None

    def plan_of_call(like: Tensor) -> tuple[RopePlan, Tensor, torch.device]:
        step = adapter.step
        if step.timestep is None:
            raise adapter.outside_forward()
        timestep = step.timestep
        device = timestep.device if isinstance(timestep, Tensor) else like.device
        calls = getattr(order, "calls", None)
        if step.plan is None:  # one plan per model call, however often the method is called in it
            if step.grid is None:
                raise ValueError(f"{type(model).__name__} was called without {' / '.join(row.inputs)}")
            dtype = freq_dtype(device)
            # one t per sample where each sample's tables come from calls of their own; elsewhere the tables carry
            # no batch dimension: one shared t (NaN where the samples differ, refused above the base grid)
            times = diffusion_times if calls is not None else diffusion_time
            t = times(timestep, divide_by=time.divide_by, reverse=time.reverse, dtype=dtype, device=device)
            adapter.plan_step(t, spans_on(step.grid, dtype, device), axes_dims, theta, base_lens)
        plan = step.plan
        if plan.inv_freq.dim() > 1:  # a plan per sample: this call's sample, a host index (no sync)
            owners, done = calls
            if done >= len(owners):
                raise RuntimeError(f"{type(model).__name__} called {row.method} more often than its inputs say")
            calls[1] = done + 1
            plan = RopePlan(plan.inv_freq[owners[done]], plan.mscale[owners[done]], plan.pair_axis)
        plain = plain_plan(axes_dims, theta, device=plan.inv_freq.device, dtype=plan.inv_freq.dtype)
        # pairs DyPE leaves as they are keep the stock method's own numbers
        return plan, (plan.inv_freq == plain.inv_freq) & (plan.mscale == 1), device

    setattr(model, row.method, DyPEMethod(original, row, bind, plan_of_call))

    def undo() -> None:
        if mine is None:
            vars(model).pop(row.method, None)
        else:
            setattr(model, row.method, mine)

    adapter.on_remove(undo)
    adapter.hook_calls(begin)
