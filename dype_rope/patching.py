"""`dype_rope.patch(model)`: find the model's adapter, install it, hand back a handle that undoes it exactly."""

from __future__ import annotations

import math
import numbers
import os
import weakref
from typing import Sequence

import torch
from torch import nn

from .config import DyPEConfig

ASPECTS = ("per-axis", "isotropic")
BACKENDS = ("auto", "torch", "triton")

# Which models are patched right now, and by which handle. Weak on both sides: the registry never keeps a
# model alive (its value would, through the adapter), and nothing is stored on the model itself, so remove()
# leaves no attribute behind. What keeps a patch alive is the model: its call hooks hold the adapter, which
# holds the handle (`adapter.handle`), so a model dropped by the user is freed with its patch. The handle
# holds the adapter weakly for the same reason: the adapter's undo steps refer to the model, so a handle the
# user keeps must not keep the adapter.
class _Patched:
    """model -> weak reference to its PatchHandle, holding neither. Weak-keyed for hashable models (torch
    modules); by id, with a finalizer dropping the entry, for unhashable ones (an MLX module is a dict)."""

    def __init__(self) -> None:
        self._hashable: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self._by_id: dict[int, tuple[weakref.ref, weakref.ref]] = {}

    def get(self, model):
        if getattr(model, "__hash__", None) is not None:
            return self._hashable.get(model)
        entry = self._by_id.get(id(model))
        return entry[1] if entry is not None and entry[0]() is model else None

    def __setitem__(self, model, handle_ref) -> None:
        if getattr(model, "__hash__", None) is not None:
            self._hashable[model] = handle_ref
            return
        key = id(model)
        self._by_id[key] = (weakref.ref(model, lambda _, key=key: self._by_id.pop(key, None)), handle_ref)

    def __delitem__(self, model) -> None:
        if getattr(model, "__hash__", None) is not None:
            del self._hashable[model]
        else:
            del self._by_id[id(model)]


_PATCHED = _Patched()


def _handle_of(model: nn.Module) -> "PatchHandle | None":
    ref = _PATCHED.get(model)
    return None if ref is None else ref()


def _target(model, what: str) -> nn.Module:
    """The module a patch acts on: `model` itself, or the original inside a torch.compile wrapper (which
    compiles whatever its original does, hooks and replaced submodules included)."""
    if not isinstance(model, nn.Module):
        from dype_rope.adapters.base import non_torch_adapter

        if non_torch_adapter(model) is not None:  # a model of another framework with its own adapter (mflux)
            return model
        raise TypeError(f"{what} takes a torch.nn.Module, got {type(model).__name__}")
    original = getattr(model, "_orig_mod", None)
    if isinstance(original, nn.Module):
        from torch._dynamo.eval_frame import OptimizedModule

        if isinstance(model, OptimizedModule):
            return original
    return model


class PatchHandle:
    """Undoes one patch: `handle.remove()`, or use the patch as a context manager."""

    def __init__(self, model: nn.Module, adapter) -> None:
        self._model = weakref.ref(model)
        # weak: the adapter (its undo steps, its embeddings) refers to the model, and the model owns the adapter
        # through its call hooks; a strong reference here would keep a dropped model alive through a kept handle
        self._adapter = weakref.ref(adapter)
        self._name, self._config, self._base_grid = adapter.name, adapter.cfg, adapter.base_grid

    @property
    def adapter(self):
        """The installed adapter while the patch is in force and the model lives; None afterwards."""
        return self._adapter() if self.active else None

    @property
    def model(self) -> nn.Module | None:
        """The patched model; None once the patch is removed or the model is gone."""
        return self._model() if self.active else None

    @property
    def config(self) -> DyPEConfig:
        return self._config

    @property
    def base_grid(self) -> tuple[int, ...]:
        return self._base_grid

    @property
    def active(self) -> bool:
        model = self._model()
        return model is not None and _handle_of(model) is self

    def remove(self) -> None:
        """Restore the model exactly as it was; calling it again does nothing. Afterwards the handle no
        longer refers to the model (it can be freed while the handle lives on)."""
        model = self._model()
        if model is None or _handle_of(model) is not self:
            return
        adapter = self._adapter()
        del _PATCHED[model]
        adapter.remove()
        adapter.handle = None

    def __enter__(self) -> "PatchHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"PatchHandle({self._name}, {self.config}, base_grid={self.base_grid}, {state})"


def _plain_number(value):
    """A numpy (or other numbers.Integral / Real) scalar as the Python int or float it stands for; anything else
    as it is. Integers are kept integers, so np.int64(64) counts as a whole number of tokens."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def _sizes(value, name: str, unit: str) -> tuple:
    """A size argument as a tuple: one number for every axis, or a sequence of numbers (Python or numpy)."""
    value = _plain_number(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)):
        return tuple(_plain_number(v) for v in value)
    raise TypeError(
        f"{name} must be a number of {unit} or a (height, width) sequence of them, got {type(value).__name__}"
        + (" (pass int(x) or x.tolist())" if isinstance(value, torch.Tensor) else "")
    )


def _base_grid(adapter_cls, base_grid, base_resolution) -> tuple[int, ...] | None:
    if base_grid is not None and base_resolution is not None:
        raise ValueError("pass base_grid (tokens) or base_resolution (pixels), not both")
    if base_resolution is not None:
        px = _sizes(base_resolution, "base_resolution", "pixels")
        if len(px) != 2:
            raise ValueError(
                "base_resolution is (height, width) in pixels; give a video's frames through "
                "base_grid=(frames, rows, cols)"
            )
        ppt = adapter_cls.pixels_per_token
        for p in px:
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
                raise ValueError(f"base_resolution must be positive, finite pixels, got {base_resolution!r}")
            if p % ppt:
                raise ValueError(f"base_resolution {p} px is not a multiple of the model's {ppt} px per token")
        return tuple(int(p) // ppt for p in px)
    if base_grid is None:
        return None
    grid = _sizes(base_grid, "base_grid", "tokens")
    for g in grid:
        if isinstance(g, bool) or not isinstance(g, int) or g <= 0:
            raise ValueError(f"base_grid must be positive whole token counts (ints), got {base_grid!r}")
    return grid


def _refuse_triton_off_cuda(model: nn.Module) -> None:
    """An explicit backend="triton" on a model whose weights are not on CUDA would fail at the first forward."""
    param = next(iter(model.parameters()), None)
    if param is None or param.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return
    raise ValueError(
        f"backend='triton' needs the model on a CUDA device, but its weights are on {param.device.type}: move it "
        "first (model.to('cuda'), then patch) or use backend='torch' (or 'auto', which picks the kernels on CUDA once their GPU check has passed)"
    )


def resolve_backend(backend: str, model: nn.Module, fused: bool = True) -> str:
    """"auto" -> "triton" when the adapter has fused attention (`fused`), the model sits on CUDA and the fused
    kernels are cleared for "auto" (dype_rope.kernels.auto_uses_triton: they passed the GPU check and import),
    else "torch". An explicit "torch" or "triton" is returned as given (the adapter refuses "triton" where it
    has no fused path)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if not fused:
        return "torch"
    param = next(iter(model.parameters()), None)
    if param is None:
        return "torch"
    from dype_rope.kernels import auto_uses_triton

    return "triton" if auto_uses_triton(param.device.type) else "torch"


def patch(
    model: nn.Module,
    method: str = "yarn",
    dynamic: bool = True,
    base_grid: int | Sequence[int] | None = None,
    base_resolution: int | Sequence[int] | None = None,
    lambda_s: float | None = None,
    lambda_t: float | None = None,
    aspect: str = "per-axis",
    yarn_modulation: str | None = None,
    backend: str = "auto",
    module: nn.Module | None = None,
    mscale: str = "log",
    start_sigma: float = 1.0,
) -> PatchHandle:
    """Make `model` follow DyPE: its RoPE frequencies are rescaled per step from the diffusion time.

    method:          "yarn" (default), "vision_yarn", "ntk", "pi" or "none" (plain RoPE, for comparisons).
    dynamic:         True for the Dy- variant, False for the static method.
    base_grid:       training grid in tokens, (rows, cols), or (frames, rows, cols) for video models to rescale
                     time too; default the model's native one (FLUX: 64 x 64).
    base_resolution: (height, width) in pixels, converted through the model's pixels per token.
    lambda_s, lambda_t: DyPE's scheduler kappa(t) = lambda_s * t ** lambda_t (None: the method's default).
    aspect:          "per-axis" (each axis its own ratio) or "isotropic" (the largest ratio on every axis).
    yarn_modulation: "multiply" (the paper) or "power" (ComfyUI-DyPE); None: the method's own (yarn "multiply",
                     vision_yarn "power").
    backend:         "auto", "torch" or "triton" (fused kernels on CUDA; "auto" takes them when it can, "triton" is
                     refused for families without fused attention).
    module:          the position-encoding submodule to replace, for models without a registered adapter.
    mscale:          YaRN's attention temperature, "log" (0.1 ln s + 1) or "log_sqrt" (1 + 0.1 ln(s) / sqrt(s)).
    start_sigma:     vision_yarn: the time below which its temperature decays (1 = from the first step).

    A torch.compile wrapper is patched through its original module (the compiled model then runs the patch).
    """
    from dype_rope.adapters import find_adapter

    model = _target(model, "patch()")
    if _handle_of(model) is not None:
        raise RuntimeError(
            f"this {type(model).__name__} is already patched; call handle.remove() or dype_rope.unpatch(model) first"
        )
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    cfg = DyPEConfig(
        method=method, dynamic=dynamic, lambda_s=lambda_s, lambda_t=lambda_t, yarn_modulation=yarn_modulation,
        mscale=mscale, start_sigma=start_sigma,
    )
    adapter_cls = find_adapter(model, module)
    grid = _base_grid(adapter_cls, base_grid, base_resolution)
    resolved = resolve_backend(backend, model, adapter_cls.fused_attention)
    adapter = adapter_cls(model, cfg, grid, aspect, resolved, module)  # refuses "triton" for families without it
    if resolved == "triton":
        _refuse_triton_off_cuda(model)
    try:
        adapter.install()
    except BaseException:
        adapter.remove()  # a failed install leaves the model as it was
        raise
    _own(model, adapter)
    handle = PatchHandle(model, adapter)
    adapter.handle = handle  # owned through the model's hooks, which hold the adapter
    _PATCHED[model] = weakref.ref(handle)
    return handle


def _own(model: nn.Module, adapter) -> None:
    """Make the model own its adapter, whatever install() registered: a hook that does nothing but hold it.

    The handle refers to the adapter weakly, so without this an adapter whose install() left no hook or module
    referring to it (a user adapter that only swaps an attribute) would be freed at once, its undo steps with
    it. The hook goes with remove(), and refuses copying and pickling as the call hooks do."""
    from dype_rope.adapters.base import CallHook

    if not isinstance(model, nn.Module):  # a model of another framework (mflux): its adapter's own replacement
        return  # (a per-patch class whose __call__ closes over the adapter) is what the model holds

    def owns(module, args, adapter=adapter):  # the default argument is the reference
        return None

    adapter.on_remove(model.register_forward_pre_hook(CallHook(owns)).remove)


def unpatch(model: nn.Module) -> None:
    """Undo dype_rope.patch() on `model` (or on the original of a torch.compile wrapper)."""
    model = _target(model, "unpatch()")
    handle = _handle_of(model)
    if handle is None:
        raise ValueError(f"this {type(model).__name__} is not patched by dype_rope")
    handle.remove()


def is_patched(model: nn.Module) -> bool:
    model = _target(model, "is_patched()")
    return _handle_of(model) is not None
