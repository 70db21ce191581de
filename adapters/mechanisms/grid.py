"""The grid mechanism of the family table: RoPE modules that build their tables from the latent's grid size.

Wan-, HunyuanVideo-, GLM-Image-, Kandinsky-style modules are called with the latent (or its frame indices and
sizes) and return tables for every token of its frames x rows x columns grid. A row names the stock module's
class, how its channels split over the axes (read off the module), its theta, the positions of the tokens of
one call (arange from 0, a frame skip, frame indices the model passes) in the order the module lays them out,
and the output format (:mod:`adapters.mechanisms.grid_formats`).

The replacement calls the stock module and keeps its number on every pair DyPE leaves untouched in this call
(axes not stretched, YaRN's low-frequency pairs, t = 0 for PI and NTK): the choice is a torch.where on the
device, so at or below the base grid the model is bit for bit what it was, in whatever precision it computes.
Only the pairs DyPE moves take its frequencies, computed in float64 where the device has it and cast to the
stock dtype.

The scale comes from the generated latent: the model's own latent argument (its shape, host integers read by
the forward pre-hook), so conditioning latents a model embeds with further calls of the same module (history
frames, clean latents) keep the generated image's scale and their own positions. At install the stock module
is called once on a small probe and must return plain RoPE on the row's declared layout; anything else is
refused with a message rather than patched wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims, freq_dtype, plain_plan
from dype_rope.timestep import diffusion_time, diffusion_times

from ..base import argument_reader, qualified_name, spans_on
from ..parallel import swap_module
from .grid_formats import CosSin, Format

Call = tuple[tuple, dict]


@dataclass(frozen=True)
class Grid:
    """The layout of one grid-built RoPE module, as a family row declares it.

    stock:     qualified class name of the stock module (a different module is refused at install);
    axes_dims: module -> channels of every axis, in the module's pair order (the split it computes itself);
    theta:     module -> the RoPE base;
    positions: (module, args, kwargs) of one call -> float positions [L, n_axes] (or [B, L, n_axes]) of the
               tokens of that call, in the order the module returns them;
    tokens:    (model, module, latent shape) -> token count of every axis of the generated latent;
    probe:     module -> (args, kwargs) of a small call used to verify the row at install;
    format:    how the stock output holds the pairs;
    latent:    the model's forward argument holding the generated latent;
    n_axes:    the number of axes the row describes where the module may have others (refused);
    timestep_shift: added to the timestep argument before the row's Time conversion (a pipeline passing
               timestep - 1);
    per_sample: the output carries a batch dimension, so a batch of different times gets one plan per sample
               (elsewhere one plan per call, and such a batch is refused above the base grid).
    """

    stock: str
    axes_dims: Callable[[nn.Module], Sequence[int]]
    theta: Callable[[nn.Module], float]
    positions: Callable[[nn.Module, tuple, dict], Tensor]
    tokens: Callable[[nn.Module, nn.Module, tuple[int, ...]], Sequence[int]]
    probe: Callable[[nn.Module], Call]
    format: Format = CosSin()
    latent: str = "hidden_states"
    n_axes: int | None = None
    timestep_shift: float = 0.0
    per_sample: bool = False

    def describe(self) -> str:
        """The mechanism and output format, for the supported-models table."""
        return f"grid, {self.format.describe()}"

    def install(self, adapter) -> None:
        install_grid(self, adapter)


def grid_positions(sizes: Sequence[int], device=None, axes: Sequence[Tensor | None] = ()) -> Tensor:
    """float32 positions [prod(sizes), n] of a grid, first axis slowest (frames-major, then rows, columns);
    axis a runs 0 .. sizes[a] - 1 unless `axes[a]` gives its positions."""
    lines = [
        axes[a].to(device=device, dtype=torch.float32) if a < len(axes) and axes[a] is not None
        else torch.arange(n, device=device, dtype=torch.float32)
        for a, n in enumerate(sizes)
    ]
    return torch.stack(torch.meshgrid(*lines, indexing="ij"), dim=-1).reshape(-1, len(lines))


def patched_sizes(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """Token counts of the trailing len(patch) axes of a latent shape, each divided by its patch size."""
    if len(shape) < len(patch):
        raise ValueError(f"a latent of shape {tuple(shape)} has fewer than the {len(patch)} grid axes expected")
    return tuple(int(n) // int(p) for n, p in zip(shape[len(shape) - len(patch):], patch))


def pair_tables(positions: Tensor, plan: RopePlan) -> tuple[Tensor, Tensor]:
    """(mscale cos, mscale sin) [..., L, D/2] of every pair, in the plan's dtype (float64 where the device has it);
    a plan per sample ([B, D/2]) gives [B, L, D/2]."""
    inv_freq, mscale, pair_axis = plan
    angles = positions.to(inv_freq.dtype).index_select(-1, pair_axis) * inv_freq.unsqueeze(-2)
    mscale = mscale.unsqueeze(-2)
    return angles.cos() * mscale, angles.sin() * mscale


def device_of(module: nn.Module) -> torch.device:
    """Where a module's tensors live (CPU for one without any): where its probe runs."""
    tensor = next(chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def stock_call(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """The stock module's own forward, past the hooks on it: a context-parallel split hook (carried over to the
    replacement, which shards what it returns) must not shard the numbers the replacement starts from."""
    return type(module).forward(module, *args, **kwargs)


class DyPEGridRope(nn.Module):
    """Drop-in for a grid-built RoPE module: same call, same output format; the stock module is called and its
    numbers kept on every pair DyPE leaves untouched in this call."""

    def __init__(
        self, original: nn.Module, grid: Grid, plan_of_call: Callable[[torch.device], tuple[RopePlan, Tensor]]
    ) -> None:
        super().__init__()
        for name, value in vars(original).items():  # the stock module's plain settings (patch_size, rope_dim ...)
            if not name.startswith("_") and name != "training" and not isinstance(value, (Tensor, nn.Module)):
                setattr(self, name, value)
        # a plain attribute, not a submodule: the module tree (names, state_dict, LoRA keys) stays as it was
        object.__setattr__(self, "original", original)
        self._grid = grid
        self._plan_of_call = plan_of_call

    def _apply(self, fn, recurse=True):
        # model.to(device / dtype) must reach the stock module's buffers too (Wan's precomputed tables)
        self.original._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def forward(self, *args, **kwargs) -> Any:
        stock = stock_call(self.original, args, kwargs)
        positions = self._grid.positions(self.original, args, kwargs)
        plan, untouched = self._plan_of_call(positions.device)
        cos, sin = pair_tables(positions, plan)
        return self._grid.format.merge(stock, cos, sin, untouched)

    def extra_repr(self) -> str:
        return f"DyPE over {type(self.original).__name__}"


def probe(grid: Grid, module: nn.Module, axes_dims: Sequence[int], theta: float) -> None:
    """Call the stock module on the row's probe: it must give plain RoPE on the row's positions and format."""
    args, kwargs = grid.probe(module)
    name = type(module).__name__
    try:
        with torch.no_grad():
            out = stock_call(module, args, kwargs)
            positions = grid.positions(module, args, kwargs)
    except Exception as err:
        raise TypeError(f"{name} cannot be called as its family row declares: {err}") from err
    check_plain_rope(name, out, positions, axes_dims, theta, grid.format, "module")



def check_plain_rope(name: str, out: Any, positions: Tensor, axes_dims, theta: float, fmt, what: str) -> None:
    """Refuse a stock `what` (module, method) whose output `out` on `positions` is not plain RoPE with `theta` and
    `axes_dims` in the format `fmt`: its family row would not describe it."""
    plan = plain_plan(axes_dims, theta, device=positions.device)
    cos, sin = pair_tables(positions, plan)
    ok, why = fmt.matches(out, cos, sin)
    if not ok:
        raise TypeError(
            f"{name} does not return plain RoPE with theta={theta}, axes {list(axes_dims)} in the format "
            f"{fmt} on the row's positions ({why}); its family row does not describe this {what}"
        )

def install_grid(grid: Grid, adapter) -> None:
    """Swap the row's module for a DyPEGridRope driven by this adapter's calls."""
    family, model = adapter.family, adapter.model
    if not family.module or "." in family.module:
        raise ValueError(f"the grid mechanism swaps a module held by the model itself, got {family.module!r}")
    original = getattr(model, family.module)
    if isinstance(original, DyPEGridRope):
        raise RuntimeError(
            f"{type(model).__name__}.{family.module} is already a DyPE embedding (a copy of a patched model?)"
        )
    if qualified_name(type(original)) != grid.stock:
        raise TypeError(
            f"{type(model).__name__}.{family.module} is {qualified_name(type(original))}, not {grid.stock} "
            f"that the {family.name} row describes"
        )
    axes_dims = check_axes_dims(grid.axes_dims(original))
    theta = float(grid.theta(original))
    if grid.n_axes is not None and len(axes_dims) != grid.n_axes:
        raise TypeError(
            f"{type(model).__name__}.{family.module} has {len(axes_dims)} RoPE axes; the {family.name} row describes "
            f"{grid.n_axes} and would rescale the wrong ones"
        )
    bad = [a for a in adapter.rescaled_axes if a >= len(axes_dims)]
    if bad:
        raise ValueError(f"the {family.name} row rescales axes {bad}, but the module has {len(axes_dims)} axes")
    probe(grid, original, axes_dims, theta)
    base_lens = adapter.axis_base_lens(len(axes_dims))
    time = family.time
    read_t = argument_reader(model.forward, time.argument)
    read_latent = argument_reader(model.forward, grid.latent)

    def begin(args: tuple, kwargs: dict) -> None:
        step = adapter.step
        step.clear()
        step.timestep = read_t(args, kwargs)
        latent = read_latent(args, kwargs)
        step.grid = tuple(latent.shape) if isinstance(latent, Tensor) else None

    def plan_of_call(device: torch.device) -> tuple[RopePlan, Tensor]:
        step = adapter.step
        if step.timestep is None:
            raise adapter.outside_forward()
        if step.plan is None:  # one plan per model call, however often the module is called in it
            if step.grid is None:
                raise ValueError(f"{type(model).__name__} was called without its latent {grid.latent!r}")
            dtype = freq_dtype(device)
            timestep = step.timestep
            if isinstance(timestep, Tensor) and timestep.dim() == 2:
                # per-frame or per-token timesteps (diffusion forcing, conditioning frames at 0): the generated
                # tokens sit at the largest noise level of the call
                timestep = timestep.amax(dim=1)
            if grid.timestep_shift:
                timestep = timestep + grid.timestep_shift
            times = diffusion_times if grid.per_sample else diffusion_time  # [B] or one shared (NaN if mixed)
            t = times(timestep, divide_by=time.divide_by, reverse=time.reverse, dtype=dtype, device=device)
            sizes = tuple(grid.tokens(model, original, step.grid))
            spans = spans_on(sizes, dtype, device)
            plan = adapter.plan_step(t, spans, axes_dims, theta, base_lens)
        plan = step.plan
        plain = plain_plan(axes_dims, theta, device=plan.inv_freq.device, dtype=plan.inv_freq.dtype)
        # pairs DyPE leaves as they are keep the stock module's own numbers
        return plan, (plan.inv_freq == plain.inv_freq) & (plan.mscale == 1)  # [D/2], or [B, D/2] per sample

    swap_module(adapter, family.module, DyPEGridRope(original, grid, plan_of_call))
    adapter.hook_calls(begin)

