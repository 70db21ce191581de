"""What every adapter shares: the registry, the per-call step context and the model hooks that fill it.

The diffusion time and the global grid size reach the position encoding through a :class:`StepContext`
that a forward pre-hook on the top-level model fills at the start of each call and a forward hook clears at
its end. The pre-hook runs before any wrapper that diffusers' context parallelism installs on `forward`, so
it sees the full, unsplit position ids: every shard's scale is the global one.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from dype_rope.config import DyPEConfig
from dype_rope.rope import RopePlan, build_plan, freq_dtype

_BY_CLASS: dict[type, type["Adapter"]] = {}
_DETECTORS: list[type["Adapter"]] = []
_BY_MODULE: dict[type, type["Adapter"]] = {}
# Classes named "package.module.Class": matched without importing their package (ComfyUI's model classes,
# whose import has side effects, are only ever matched when the user already imported them).
_BY_NAME: dict[str, type["Adapter"]] = {}


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
    """What the current model call knows, never shared between models.

    The model's forward pre-hook stores the call's raw `timestep` and position `ids` (no tensor work there, so
    a compiled model stays one graph); the position encoding turns them into the diffusion time t, the
    per-axis scales and the per-pair plan inside the model's forward, and keeps them here for the attention
    processors of the same call. The forward hook clears everything when the call returns.
    """

    __slots__ = ("timestep", "ids", "t", "scales", "plan")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.timestep = None
        self.ids: Tensor | None = None
        self.t: Tensor | None = None
        self.scales: Tensor | None = None
        self.plan: RopePlan | None = None


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


def image_spans(ids: Tensor, centred: bool = False) -> Tensor:
    """Per-axis extent (max position + 1) of the generated image's tokens in ids [L, n] or [B, L, n].

    Tokens of conditioning images (FLUX Kontext, Qwen-Image-Edit) sit on a later frame index of axis 0 and
    keep their own positions: only the tokens on the first frame count. centred=True measures max - min + 1
    instead, for layouts whose positions need not start at 0 (centred grids).
    """
    if ids.dim() == 3:
        ids = ids[0]
    pos = ids.to(torch.float64 if freq_dtype(ids.device) == torch.float64 else torch.float32)
    frame = pos[:, 0]
    mine = (frame == frame.amin()).unsqueeze(-1)
    top = torch.where(mine, pos, torch.full_like(pos, -torch.inf)).amax(dim=0) + 1
    if not centred:
        return top
    return top - torch.where(mine, pos, torch.full_like(pos, torch.inf)).amin(dim=0)


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
        self.step = StepContext()
        self._undo: list[Callable[[], None]] = []
        grid = tuple(base_grid if base_grid is not None else self.default_base_grid())
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
    def on_remove(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()
        self.step.clear()

    def hook_calls(self, begin: Callable[[tuple, dict], None]) -> None:
        """Run `begin(args, kwargs)` before every call of the model and clear the step context after it."""

        def pre(module, args, kwargs):
            begin(args, kwargs)
            return None

        def post(module, args, kwargs, output):
            self.step.clear()
            return None

        h_pre = self.model.register_forward_pre_hook(pre, with_kwargs=True)
        h_post = self.model.register_forward_hook(post, with_kwargs=True, always_call=True)
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
        step = self.step

        def begin(args: tuple, kwargs: dict) -> None:
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
        """Scales and plan of this call from its diffusion time and the generated image's spans."""
        scales = self.axis_scales(spans)
        plan = build_plan(axes_dims, theta, scales, t, self.cfg, base_lens)
        self.step.t, self.step.scales, self.step.plan = t, scales, plan
        return plan
