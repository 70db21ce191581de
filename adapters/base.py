"""What every adapter shares: the registry, the per-call step context and the model hooks that fill it.

The diffusion time and the global grid size reach the position encoding through a :class:`StepContext`
that a forward pre-hook on the top-level model fills at the start of each call and a forward hook clears at
its end. The pre-hook runs before any wrapper that diffusers' context parallelism installs on `forward`, so
it sees the full, unsplit position ids: every shard's scale is the global one.

The step context belongs to the call: each thread calling the model has its own (`Adapter.step`), so two
threads running one patched model never read each other's timestep. The hooks are the only link from the
model to its patch: they keep the adapter alive exactly as long as the model holds them, and they refuse to
be copied or pickled (a copy would share this patch's state; see docs/api.md).
"""

from __future__ import annotations

import inspect
import math
import numbers
import threading
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from dype_rope.config import DyPEConfig
from dype_rope.rope import RopePlan, build_plan, freq_dtype
from dype_rope.timestep import MIXED_TIMES, host_readable

_BY_CLASS: dict[type, type["Adapter"]] = {}
_DETECTORS: list[type["Adapter"]] = []
_BY_MODULE: dict[type, type["Adapter"]] = {}
# Classes named "package.module.Class": matched without importing their package (ComfyUI's model classes,
# whose import has side effects, are only ever matched when the user already imported them).
_BY_NAME: dict[str, type["Adapter"]] = {}
# Classes (qualified names) DyPE cannot rescale meaningfully, with the reason patch() gives (adapters/table.py).
_REFUSED: dict[str, str] = {}


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_adapter(
    *model_classes: type | str, detect: bool = False, module_classes: Sequence[type] = ()
) -> Callable[[type["Adapter"]], type["Adapter"]]:
    """Class decorator: use this adapter for `model_classes` (and their subclasses), each a class or its
    qualified name "package.module.Class"; with detect=True also for any model its `detects(model)` accepts;
    for `patch(model, module=m)` with m an instance of one of `module_classes`."""

    def decorate(adapter_cls: type["Adapter"]) -> type["Adapter"]:
        if not (isinstance(adapter_cls, type) and issubclass(adapter_cls, Adapter)):
            raise TypeError(f"{adapter_cls!r} is not a dype_rope.adapters.Adapter subclass")
        for cls in model_classes:
            if isinstance(cls, str) and "." in cls:
                _BY_NAME[cls] = adapter_cls
            elif isinstance(cls, type):
                _BY_CLASS[cls] = adapter_cls
            else:
                raise TypeError(f"register_adapter takes model classes or 'package.module.Class' names, got {cls!r}")
        for cls in module_classes:
            _BY_MODULE[cls] = adapter_cls
        if detect and adapter_cls not in _DETECTORS:
            _DETECTORS.append(adapter_cls)
        return adapter_cls

    return decorate


def refuse_classes(names: Sequence[str], reason: str) -> None:
    """patch() on a model of one of these classes (qualified names) raises TypeError(reason)."""
    for name in names:
        if not (isinstance(name, str) and "." in name):
            raise TypeError(f"refused classes are 'package.module.Class' names, got {name!r}")
        _REFUSED[name] = reason


def registered_adapters() -> dict[str, list[str]]:
    """Adapter name -> the model classes registered for it (for docs and error messages)."""
    out: dict[str, list[str]] = {}
    for cls, adapter in _BY_CLASS.items():
        out.setdefault(adapter.name, []).append(cls.__name__)
    for name, adapter in _BY_NAME.items():
        out.setdefault(adapter.name, []).append(name)
    for adapter in _DETECTORS:
        out.setdefault(adapter.name, [])
    return out


def find_adapter(model: nn.Module, module: nn.Module | None = None) -> type["Adapter"]:
    """The adapter for `model`: by class along the MRO, then by detector; `module` (a position-encoding
    submodule the user points at) selects the adapter registered for that module's class."""
    if module is not None:
        for cls in type(module).__mro__:
            if cls in _BY_MODULE:
                return _BY_MODULE[cls]
        raise TypeError(
            f"dype_rope has no adapter for position-encoding modules of type {type(module).__name__}; "
            "register one with @dype_rope.register_adapter(module_classes=[...])"
        )
    refused = _REFUSED.get(qualified_name(type(model)))
    if refused is not None:
        raise TypeError(f"dype_rope does not patch {type(model).__name__}: {refused}")
    for cls in type(model).__mro__:
        if cls in _BY_CLASS:
            return _BY_CLASS[cls]
        if qualified_name(cls) in _BY_NAME:
            return _BY_NAME[qualified_name(cls)]
    for adapter in _DETECTORS:
        if adapter.detects(model):
            return adapter
    known = ", ".join(sorted(c for names in registered_adapters().values() for c in names)) or "none"
    raise TypeError(
        f"dype_rope has no adapter for {type(model).__name__}. Supported: {known}. For your own DiT, subclass "
        "dype_rope.adapters.Adapter and decorate it with @dype_rope.register_adapter(YourModel) "
        "(docs/adapters.md shows how)."
    )


class StepContext:
    """What the current model call knows, never shared between models nor between threads.

    The model's forward pre-hook stores the call's raw `timestep` and position `ids` (no tensor work there, so
    a compiled model stays one graph); the position encoding turns them into the diffusion time t, the
    per-axis scales and the per-pair plan inside the model's forward, and keeps them here for the attention
    processors of the same call. The forward hook clears everything when the call returns. `grid` holds
    host-side sizes an adapter reads from the call's arguments (Z-Image's latent grid).
    """

    __slots__ = ("timestep", "ids", "t", "scales", "plan", "grid")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.timestep = None
        self.ids: Tensor | None = None
        self.t: Tensor | None = None
        self.scales: Tensor | None = None
        self.plan: RopePlan | None = None
        self.grid: tuple[int, ...] | None = None


COPY_REFUSED = (
    "copy.deepcopy of a model patched by dype_rope is not supported: the copy would share this patch's hooks and "
    "could be neither run on its own nor restored. Copy the model before dype_rope.patch() or after "
    "handle.remove(), then patch the copy"
)
PICKLE_REFUSED = (
    "a model patched by dype_rope cannot be pickled (torch.save(model), pickle.dumps): its patch lives in "
    "per-call hooks that are not data. Save model.state_dict() (the patch leaves it unchanged), or call "
    "handle.remove() first and patch the model again after loading"
)


class CallHook:
    """A forward (pre-)hook owned by one patch. Copying it would leave the copy bound to this patch, and a hook
    is code, not data: deepcopy and pickle of a patched model stop here with a message saying what to do."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)

    def __deepcopy__(self, memo):
        raise TypeError(COPY_REFUSED)

    def __reduce_ex__(self, protocol):
        raise TypeError(PICKLE_REFUSED)


def argument_reader(forward: Callable, name: str) -> Callable[[tuple, dict], Any]:
    """Read argument `name` of a bound `forward` from a call's (args, kwargs), resolved once by signature."""
    params = [p for p in inspect.signature(forward).parameters.values() if p.kind != p.VAR_KEYWORD]
    names = [p.name for p in params]
    if name not in names:
        raise TypeError(f"{forward.__qualname__} has no argument {name!r}")
    index = names.index(name)
    default = params[index].default
    default = None if default is inspect.Parameter.empty else default

    def read(args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        return args[index] if index < len(args) else default

    return read


def spans_on(sizes: Sequence[float], dtype: torch.dtype, device) -> Tensor:
    """Per-axis sizes known on the host (tensor shapes, img_shapes) as a [n_axes] tensor on `device`, each
    filled on the device rather than copied from host memory (a copy would stall the stream every step)."""
    return torch.stack([torch.full((), float(s), dtype=dtype, device=device) for s in sizes])


def image_spans(ids: Tensor) -> Tensor:
    """Per-axis extent (in tokens) of the generated image in position ids [L, n] or [B, L, n].

    Tokens of conditioning images (FLUX Kontext, Qwen-Image-Edit) sit on a later frame index of axis 0 and
    keep their own positions: only the tokens on the first frame count. The extent of axis a is 1 (the grid's
    first corner) plus the number of those tokens on the line along a through that corner, past it (their other
    coordinates all at their minimum, their own above it). A count, so it is exact whatever the ids' dtype
    (FluxPipeline casts ids to bf16, where 511 rounds to 512 and a maximum would say 513); tokens sitting on the
    corner itself (text and padding ids of zeros) are not counted twice. No image tokens give extents of 0.
    """
    if ids.dim() == 3:
        ids = ids[0]
    dtype = torch.float64 if freq_dtype(ids.device) == torch.float64 else torch.float32
    pos = ids.to(dtype)
    n = pos.shape[-1]
    # a sentinel row of +inf keeps every minimum defined when there are no tokens
    sentinel = torch.full((1, n), math.inf, dtype=dtype, device=pos.device)
    frame = torch.cat([pos[:, :1], sentinel[:, :1]]).amin()
    mine = (pos[:, 0] == frame).unsqueeze(-1)
    corner = torch.cat([torch.where(mine, pos, math.inf), sentinel]).amin(dim=0)
    at_corner = pos == corner  # [L, n]: each coordinate at its minimum
    along = torch.eye(n, dtype=torch.bool, device=pos.device)  # [a, b]: coordinate b varies along axis a
    on_line = (at_corner.unsqueeze(1) | along).all(dim=-1) & mine & ~at_corner  # [L, n]: past the corner on a
    any_token = mine.any().to(dtype)
    return on_line.sum(dim=0, dtype=dtype) + any_token


class Adapter:
    """Base of every adapter. Subclasses set `name`, `pixels_per_token`, and implement `base_grid`,
    `install` (replacing the position encoding, registering undo steps with `self.on_remove`)."""

    name = "adapter"
    pixels_per_token = 16
    rescaled_axes: tuple[int, ...] = ()
    # True where install() routes the family's attention through the fused kernels for backend="triton"
    fused_attention = False

    def __init__(
        self,
        model: nn.Module,
        cfg: DyPEConfig,
        base_grid: Sequence[int] | None,
        aspect: str = "per-axis",
        backend: str = "torch",
        module: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.aspect = aspect
        if backend not in ("torch", "triton"):
            raise ValueError(f"an adapter's backend is 'torch' or 'triton' (patch() resolves 'auto'), got {backend!r}")
        if backend == "triton" and not self.fused_attention:
            # an explicit request is refused rather than ignored: the user would believe the kernels ran
            raise ValueError(
                f"backend='triton' is not supported for the {self.name} family: its attention is not wired to the "
                "fused kernels; use backend='torch' or backend='auto'"
            )
        self.backend = backend  # "torch" or "triton", already resolved from "auto" by patch()
        self.module = module  # the position-encoding module the user pointed at, if any
        self._calls = threading.local()  # one StepContext per calling thread
        self.handle = None  # the PatchHandle, set by patch(): the model owns both through its call hooks
        self._undo: list[Callable[[], None]] = []
        grid = tuple(base_grid if base_grid is not None else self.default_base_grid())
        # numpy integers (np.int64 from arrays, shapes of numpy arrays) are whole token counts too
        grid = tuple(int(g) if isinstance(g, numbers.Integral) and not isinstance(g, bool) else g for g in grid)
        if len(grid) != len(self.rescaled_axes):
            raise ValueError(
                f"{self.name} rescales {len(self.rescaled_axes)} axes, so base_grid needs {len(self.rescaled_axes)} "
                f"sizes, got {grid}"
            )
        if any(isinstance(g, bool) or not isinstance(g, int) or g <= 0 for g in grid):
            raise ValueError(f"base_grid must be positive whole token counts, got {grid}")
        self.base_grid = grid

    # -- to implement --------------------------------------------------------------------------------------
    @classmethod
    def detects(cls, model: nn.Module) -> bool:
        return False

    def default_base_grid(self) -> tuple[int, ...]:
        raise NotImplementedError

    def install(self) -> None:
        raise NotImplementedError

    # -- shared machinery ----------------------------------------------------------------------------------
    @property
    def step(self) -> StepContext:
        """The step context of the call running in this thread (read it at call time, never keep it: another
        thread has its own)."""
        step = getattr(self._calls, "step", None)
        if step is None:
            step = self._calls.step = StepContext()
        return step

    def on_remove(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def remove(self) -> None:
        """Run the undo steps in reverse, then let go of the model: a handle kept after remove() must not keep
        the model alive."""
        while self._undo:
            self._undo.pop()()
        self.step.clear()
        self.model = None
        self.module = None

    def hook_calls(self, begin: Callable[[tuple, dict], None]) -> None:
        """Run `begin(args, kwargs)` before every call of the model and clear the step context after it.

        These hooks are what ties the patch to the model: they hold the adapter, so the model keeps its patch
        alive and the patch never keeps the model alive (a dropped model is freed with its patch)."""

        def pre(module, args, kwargs):
            begin(args, kwargs)
            return None

        def post(module, args, kwargs, output):
            self.step.clear()
            return None

        h_pre = self.model.register_forward_pre_hook(CallHook(pre), with_kwargs=True)
        h_post = self.model.register_forward_hook(CallHook(post), with_kwargs=True, always_call=True)
        self.on_remove(h_pre.remove)
        self.on_remove(h_post.remove)

    def axis_scales(self, spans: Tensor) -> Tensor:
        """Per-axis size ratio s (1 on axes never rescaled); "isotropic" gives every rescaled axis the largest.

        Built from device ops and Python scalars only: a host list turned into a device tensor would be a
        copy, and a stall, every step.
        """
        ratios = {a: spans[a] / base for a, base in zip(self.rescaled_axes, self.base_grid)}
        if self.aspect == "isotropic":
            largest = torch.stack(list(ratios.values())).amax()
            ratios = {a: largest for a in ratios}
        one = torch.ones((), dtype=spans.dtype, device=spans.device)
        return torch.stack([ratios.get(a, one) for a in range(spans.shape[0])])

    def capture(self, timestep_name: str, ids_name: str | None = None) -> Callable[[tuple, dict], None]:
        """A `begin` for hook_calls that stores the call's raw timestep argument (and its position ids, for
        models that take them as an argument) in the step context: no tensor work, so no extra graph."""
        read_t = argument_reader(self.model.forward, timestep_name)
        read_ids = argument_reader(self.model.forward, ids_name) if ids_name else None

        def begin(args: tuple, kwargs: dict) -> None:
            step = self.step
            step.clear()
            step.timestep = read_t(args, kwargs)
            if read_ids is not None:
                step.ids = read_ids(args, kwargs)

        return begin

    def axis_base_lens(self, n_axes: int) -> tuple[float, ...]:
        """YaRN's base length L of every axis: the base grid on rescaled axes, 1 (unused) on the others."""
        grid = dict(zip(self.rescaled_axes, self.base_grid))
        return tuple(float(grid.get(a, 1.0)) for a in range(n_axes))

    def stock_encoding(self, attr: str, stock_cls: type | None, dype_cls: type | None):
        """The model's own position encoding at `attr`, refusing one DyPE already replaced (a copy of a patched
        model) and one of another type (the adapter would misread it)."""
        original = getattr(self.model, attr, None)
        owner = f"{type(self.model).__name__}.{attr}"
        if dype_cls is not None and isinstance(original, dype_cls):
            raise RuntimeError(f"{owner} is already a DyPE embedding (a copy of a patched model?)")
        if stock_cls is None or not isinstance(original, stock_cls):
            expected = getattr(stock_cls, "__name__", "the stock module (is diffusers installed?)")
            raise TypeError(f"{owner} is {type(original).__name__}, not {expected}")
        return original

    def outside_forward(self) -> RuntimeError:
        """The error of a position encoding called without its model's call (no timestep captured)."""
        return RuntimeError(
            f"the DyPE position encoding of {type(self.model).__name__} was called outside the model's forward; "
            "call the patched model itself"
        )

    def plan_step(self, t: Tensor, spans: Tensor, axes_dims: Sequence[int], theta: float, base_lens) -> RopePlan:
        """Scales and plan of this call from its diffusion time and the generated image's spans.

        t is 0-d (one plan for the batch) or [B] (one plan per sample, for families whose tables carry a
        batch dimension)."""
        scales = self.axis_scales(spans)
        refuse_mixed_times(t, scales > 1)
        plan = build_plan(axes_dims, theta, scales, t, self.cfg, base_lens, self.rescaled_axes)
        step = self.step
        step.t, step.scales, step.plan = t, scales, plan
        return plan


def refuse_mixed_times(t: Tensor, rescaled) -> None:
    """Raise where a batch of different times (a NaN t, see dype_rope.timestep.diffusion_time) meets a rescaled
    axis, on host values only (free to read); elsewhere the NaN reaches only the rescaled pairs' tables.
    `rescaled` is a bool or a bool tensor of the axes DyPE rescales."""
    if t.dim() or not host_readable(t):
        return
    if isinstance(rescaled, Tensor):
        if not host_readable(rescaled):
            return
        rescaled = bool(rescaled.any())
    if rescaled and bool(torch.isnan(t)):
        raise ValueError(MIXED_TIMES)


def non_torch_adapter(model) -> "type[Adapter] | None":
    """The adapter registered by qualified class name for a model that is not a torch module (its adapter sets
    `torch_module = False`, e.g. mflux's MLX transformers), else None."""
    for cls in type(model).__mro__:
        adapter = _BY_NAME.get(qualified_name(cls))
        if adapter is not None:
            return adapter if not getattr(adapter, "torch_module", True) else None
    return None
