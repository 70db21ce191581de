"""The row type of the family table: everything the contract suite (tests/test_contract.py) needs to know about
one model family, and the layouts that read a family's position-encoding tables pair by pair.

A row says how to build the tiny model, its inputs at a given grid and diffusion time, where its position
encoding sits and how its tables read, its time convention and its sampler, and whether it has fused attention.
The checks themselves live in the suite; a family's own test file holds only what no other family has. Rows of
another host (ComfyUI's model classes) are built the same way in their own table, reusing these layouts and
tests/reference_dype.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from reference_dype import axis_ratios, rope_pairs

Grid = tuple[int, ...]  # (rows, columns), or (frames, rows, columns) for video


@dataclass(frozen=True)
class Sampler:
    """One of the family's samplers: the scheduler's timesteps (0 .. 1000) and the diffusion time t each step
    must give (the scheduler's own sigmas)."""

    name: str
    steps: Callable[[], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Fused:
    """A family with fused attention (backend="triton"): what patch() swaps and what it refuses."""

    attentions: tuple[type, ...]  # attention module classes whose processors are swapped
    processors: dict  # attention class -> the fused processor class it must get
    encoding: type  # the fused position-encoding module that replaces the stock one
    unsupported: Callable[[nn.Module], Any]  # a processor the fused backend must refuse on that attention
    grid: Grid = (4, 5)  # small: the interpreter runs one program per token
    base: Grid = (2, 2)
    cond: Grid | None = None
    batch: int = 1


@dataclass(frozen=True)
class Family:
    name: str  # the test id
    adapter: str  # handle.adapter.name
    build: Callable[..., nn.Module]  # build(**config overrides) -> a fresh, seeded tiny model in eval mode
    make_inputs: Callable[..., dict]  # make_inputs(grid, batch, cond, seed) -> every input but the time
    time_arg: str  # the forward argument that carries the timestep
    pipeline_time: Callable[[Tensor], Tensor]  # scheduler timestep (1000 = noise) -> what the pipeline passes
    encoding: str  # attribute of the position encoding DyPE replaces
    layout: Any  # reads the encoding's tables (RopeLayout or a family's own layout)
    base: Grid  # base grid of the tests (non-square, so that rows and columns cannot be swapped unseen)
    below: tuple[tuple[Grid, Grid], ...]  # (grid, base) at or below the base grid: bit-exact
    above: Grid  # beyond the base grid on both axes, by different ratios
    default_base: Grid  # handle.base_grid with no base given
    samplers: tuple[Sampler, ...]
    direct_call: Callable[[], tuple] | None = None  # arguments of a call to the encoding outside the model
    output: Callable[[Any], Tensor] = lambda out: out.sample
    cond: Grid | None = None  # a conditioning image that must keep its positions and not set the scale
    lead: Grid = ()  # grid entries in front of (rows, columns): the frames of a video
    beyond: Grid | None = None  # a grid beyond the base at which the stock model runs (default: 2x the base)
    four_x: Grid | None = None  # the grid of the 4x test where 4x the base grid does not fit the model
    none_is_stock: bool = True  # method="none" beyond the base grid gives the stock tables bit for bit
    fullgraph: bool = True  # False where the stock model itself cannot compile as one graph
    cp_hooks: bool = False  # the model's _cp_plan splits the encoding's output (context parallelism)
    fused: Fused | None = None

    def inputs(self, grid: Grid, t: float, batch: int = 1, cond: Grid | None = None, seed: int = 1) -> dict:
        """Inputs at `grid` with DyPE's time t (1 = noise), passed as the family's pipeline passes it."""
        return self.inputs_at(grid, torch.tensor(1000.0 * t), batch, cond, seed)

    def inputs_at(self, grid: Grid, timestep: Tensor, batch: int = 1, cond: Grid | None = None, seed: int = 1) -> dict:
        """Inputs at `grid` with a scheduler timestep (0 .. 1000, 1000 = noise) as the family's pipeline passes it."""
        x = self.make_inputs(grid, batch=batch, cond=cond, seed=seed)
        x[self.time_arg] = self.pipeline_time(torch.as_tensor(timestep, dtype=torch.float32).expand(batch).clone())
        return x

    def run(self, model: nn.Module, x: dict) -> Tensor:
        with torch.no_grad():
            return self.output(model(**x))


def flow_match(config: dict, image_seq_len: int, steps: int = 28, mu: float | None = None) -> tuple[Tensor, Tensor]:
    """(timesteps, sigmas) of a FlowMatchEulerDiscreteScheduler set up as FLUX-style pipelines do (sigmas
    1 .. 1/steps, resolution shift mu from calculate_shift unless given)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    c = scheduler.config
    if mu is None:
        mu = calculate_shift(image_seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return scheduler.timesteps, scheduler.sigmas[:-1]


# -- reading the tables -------------------------------------------------------------------------------------


class TablesArgument(str):
    """The `encoding` of a family handed its tables as an argument (CogVideoX's image_rotary_emb): the string
    names the model's list of blocks, `argument` the tables' argument; a "call" of the encoding is a call of the
    first block, its output the tables that block receives (recorded by a pre-hook registered last, so after any
    hook of the patch)."""

    argument: str

    def __new__(cls, blocks: str, argument: str) -> "TablesArgument":
        self = super().__new__(cls, blocks)
        self.argument = argument
        return self


def _argument_calls(model: nn.Module, blocks: str, argument: str, run: Callable[[], Any]) -> list[tuple[tuple, Any]]:
    import inspect

    first = getattr(model, blocks)[0]
    names = list(inspect.signature(first.forward).parameters)
    calls = []

    def record(module, args, kwargs):
        calls.append(((), kwargs[argument] if argument in kwargs else args[names.index(argument)]))

    hook = first.register_forward_pre_hook(record, with_kwargs=True)
    try:
        run()
    finally:
        hook.remove()
    return calls


def encoding_calls(model: nn.Module, name: str, run: Callable[[], Any]) -> list[tuple[tuple, Any]]:
    """(args, output) of every call of the model's encoding `name` during run(); a plain object (not a module)
    is wrapped for the duration; tables handed to the model as an argument (TablesArgument) are read as the
    forward receives them."""
    if isinstance(name, TablesArgument):
        return _argument_calls(model, str(name), name.argument, run)
    calls = []
    encoding = getattr(model, name)
    if isinstance(encoding, nn.Module):
        hook = encoding.register_forward_hook(lambda m, args, out: calls.append((args, out)))
        try:
            run()
        finally:
            hook.remove()
        return calls

    def recording(*args):
        out = encoding(*args)
        calls.append((args, out))
        return out

    setattr(model, name, recording)
    try:
        run()
    finally:
        setattr(model, name, encoding)
    return calls


def interleaved(cos: Tensor, sin: Tensor) -> Tensor:
    """(cos, sin) [..., L, D] with both channels of a pair equal -> [L, D/2, 2]."""
    cos, sin = cos.reshape(-1, cos.shape[-1]), sin.reshape(-1, sin.shape[-1])
    assert torch.equal(cos[:, 0::2], cos[:, 1::2]) and torch.equal(sin[:, 0::2], sin[:, 1::2])
    return torch.stack([cos[:, 0::2], sin[:, 0::2]], -1).double()


def complex_pairs(table: Tensor) -> Tensor:
    """complex [..., L, D/2] -> [L, D/2, 2]."""
    table = table.reshape(-1, table.shape[-1])
    return torch.stack([table.real, table.imag], -1).double()


def matrix_pairs(m: Tensor) -> Tensor:
    """rotation matrices [[cos, -sin], [sin, cos]] [..., L, D/2, 2, 2] -> [L, D/2, 2]."""
    assert torch.equal(m[..., 0, 0], m[..., 1, 1]) and torch.equal(m[..., 0, 1], -m[..., 1, 0])
    return torch.stack([m[..., 0, 0], m[..., 1, 0]], -1).reshape(-1, m.shape[-3], 2).double()


@dataclass(frozen=True)
class RopeLayout:
    """A RoPE encoding whose calls return per-token tables: `tables(output)` reads one call's output as
    [L, D/2, 2] (m cos, m sin) blocks, `positions(grid, cond, args)` gives the float64 positions of the tokens of
    every block of every call, in order, as the family lays them out (written by hand; where the model computes
    the ids itself, the ids the calls received, `args` being the arguments of each call)."""

    axes: tuple[int, ...]
    theta: float
    tables: Callable[[Any], list[Tensor]]
    positions: Callable[[Grid, Grid | None, list[tuple]], list[Tensor]]
    dtype: torch.dtype  # of the tables the stock encoding returns
    tol: float = 2e-7  # float32 rounding of cos and sin
    rescaled: tuple[int, ...] = (1, 2)  # axes of rows and columns

    def seen(self, calls: list[tuple[tuple, Any]]) -> list[Tensor]:
        return [table for _, out in calls for table in self.tables(out)]

    def expected(self, calls, grid: Grid, base: Grid, t: float, aspect: str, cond: Grid | None, **schedule):
        """The reference tables of the same calls: spans from the generated image only."""
        spans, base_lens = [1.0] * len(self.axes), [1.0] * len(self.axes)
        rescaled = self.rescaled if len(base) == 2 else (0, *self.rescaled)  # (frames, rows, columns) of video
        for axis, n, b in zip(rescaled, grid[-len(base):], base):
            spans[axis], base_lens[axis] = n, b
        scales = axis_ratios(spans, base_lens, rescaled, aspect, spatial=self.rescaled)
        positions = self.positions(grid, cond, [args for args, _ in calls])
        pairs = (rope_pairs(p, self.axes, self.theta, scales, t, base_lens, **schedule) for p in positions)
        return [torch.stack(pair, -1) for pair in pairs]


def hooks_of(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
        for m in model.modules()
    )


# Class attributes through which diffusers finds submodules by name.
DIFFUSERS_NAMES = ("_skip_layerwise_casting_patterns", "_keep_in_fp32_modules", "_cp_plan")


def state_of(model: nn.Module) -> dict:
    """What remove() must give back unchanged: module names, parameters, attributes diffusers reads."""
    return dict(
        names=[n for n, _ in model.named_modules()],
        params={k: v.clone() for k, v in model.state_dict().items()},
        attrs=sorted(vars(model)),
        hooks=hooks_of(model),
        meta={k: getattr(type(model), k, None) for k in DIFFUSERS_NAMES},
    )


def assert_same_state(before: dict, after: dict) -> None:
    assert before["names"] == after["names"]
    assert before["attrs"] == after["attrs"]
    assert before["hooks"] == after["hooks"]
    assert before["meta"] == after["meta"]
    assert before["params"].keys() == after["params"].keys()
    for k, v in before["params"].items():
        assert torch.equal(v, after["params"][k]), k


def randomise_qk_norms(model: nn.Module, seed: int = 7) -> nn.Module:
    """Learned, random QK-norm weights and a different eps for every norm (q, k, text q, text k), large enough to
    matter: a kernel that drops the weight, swaps the eps of q and k, or gives text tokens the image norm then
    changes the output well beyond rounding."""
    g = torch.Generator().manual_seed(seed)
    eps = {"norm_q": 0.05, "norm_k": 0.4, "norm_added_q": 0.15, "norm_added_k": 1.2}
    for name, module in model.named_modules():
        role = name.rsplit(".", 1)[-1]
        if role in eps and getattr(module, "weight", None) is not None:
            with torch.no_grad():
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=g))
            module.eps = eps[role]
    return model
