"""The array namespace `xp` the core computes with: one schedule implementation for every array library.

The schedules, `build_plan`, `plain_plan` and `rope_tables` are written against the Python array API standard
(https://data-apis.org/array-api/): `xp = namespace(x)` once at the top of a function, then `xp.log`, `xp.where`,
`xp.clip`, ... and Python operators on the arrays. What `namespace` hands back:

  torch              :class:`_Torch`, the standard's names bound straight to torch's own functions (torch.clamp,
                     torch.where, Tensor.to, ...), exactly the operations the torch-only code used, so results
                     are bit for bit today's, eager calls pay no wrapper, and torch.compile traces plain torch
                     ops. Names it does not define come from array-api-compat's torch namespace.
  MLX                :class:`_MLX`, a small shim (MLX is not array-API conforming: `concatenate`, `astype` as a
                     method, no `device`); names it does not define come from mlx.core.
  anything else      array-api-compat's namespace: numpy, JAX, array-api-strict, CuPy, dask, ...

The lookup is keyed by the array's type and cached, so a traced call (torch.compile, jax.jit) resolves it to a
constant without graph breaks. Arrays of a library without a namespace are refused with a TypeError naming it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Sequence

_BY_TYPE: dict[type, Any] = {}
_SHIMS: dict[str, Any] = {}  # one instance per library, so that `namespace(a) is namespace(b)` means one library
_SCALARS = (bool, int, float, complex)


def namespace(*arrays) -> Any:
    """The array namespace of the first array among `arrays` (Python numbers are skipped)."""
    for x in arrays:
        xp = _BY_TYPE.get(type(x))
        if xp is not None:
            return xp
    for x in arrays:
        if x is None or type(x) in _SCALARS:  # exact types: numpy scalars (np.float64) subclass float
            continue
        xp = _BY_TYPE[type(x)] = _resolve(x)
        return xp
    raise TypeError("dype_rope needs at least one array (numpy, torch, JAX, MLX or any array-API library), got only "
                    f"{', '.join(type(x).__name__ for x in arrays) or 'nothing'}")


def _resolve(x) -> Any:
    root = type(x).__module__.split(".")[0]
    if root in ("torch", "mlx"):
        if root not in _SHIMS:
            _SHIMS[root] = _Torch() if root == "torch" else _MLX()
        return _SHIMS[root]
    try:
        import array_api_compat
    except ImportError as err:  # pragma: no cover - a core dependency; only a broken install lands here
        raise ImportError(f"arrays of {root} need array-api-compat (pip install array-api-compat)") from err
    try:
        return array_api_compat.array_namespace(x)
    except TypeError:
        raise TypeError(
            f"dype_rope cannot compute with {type(x).__module__}.{type(x).__qualname__}: it is not an array of "
            "numpy, torch, JAX, MLX or another array-API library"
        ) from None


def device(x) -> Any:
    """The device of `x` for creation functions (`device=`); None where the library has no such notion (MLX)."""
    return getattr(x, "device", None) if _is_torch_or_mlx(x) else _compat_device(x)


def _is_torch_or_mlx(x) -> bool:
    return isinstance(_BY_TYPE.get(type(x)), (_Torch, _MLX))


def _compat_device(x):
    import array_api_compat

    return array_api_compat.device(x)


def broadcast_shapes(*shapes: Sequence[int]) -> tuple:
    """NumPy broadcasting of shapes (the standard has broadcast_arrays, not this; no arrays are made)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(-ndim, 0):
        sizes = [s[i] for s in shapes if len(s) >= -i]
        size = next((n for n in sizes if n != 1), 1)
        if any(n != 1 and n != size for n in sizes):
            raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(size)
    return tuple(out)


def quiet_infinities(xp, fn: Callable[[], Any]) -> Any:
    """fn(), with a division by zero giving inf quietly, as torch, JAX and MLX do: numpy (and array-api-strict,
    built on it) would warn where a schedule divides by a threshold of 0 on purpose (t = 0). Other libraries
    call fn() as it is: no context manager reaches torch.compile's trace (it would break the graph)."""
    if not isinstance(xp, (_Torch, _MLX)) and xp.__name__.split(".")[0] in ("numpy", "array_api_compat", "array_api_strict"):
        import numpy

        with numpy.errstate(divide="ignore"):
            return fn()
    return fn()


def index_dtype(xp) -> Any:
    """The integer dtype of pair indices: int64, or the library's default where it has no int64 (JAX without
    x64), so that no library warns about a truncated dtype."""
    if isinstance(xp, (_Torch, _MLX)):
        return xp.int64
    try:
        return xp.__array_namespace_info__().default_dtypes()["indexing"]
    except (AttributeError, KeyError, TypeError):
        return xp.int64


class _Fallback:
    """Names a shim does not define come from `_base_module` (array-api-compat's torch namespace, mlx.core)."""

    _base_module = ""

    def __getattr__(self, name: str):
        base = sys.modules.get(self._base_module) or importlib.import_module(self._base_module)
        return getattr(base, name)


class _Torch(_Fallback):
    """The array API names the core uses, as the very torch calls of the torch-only implementation."""

    _base_module = "array_api_compat.torch"

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self.float32, self.float64, self.int64, self.bool = torch.float32, torch.float64, torch.int64, torch.bool
        for name in ("log", "floor", "ceil", "cos", "sin", "exp", "sqrt", "where", "stack", "broadcast_to",
                     "ones_like", "maximum", "minimum", "reshape", "isfinite", "isnan", "all", "any"):
            setattr(self, name, getattr(torch, name))

    def asarray(self, obj, dtype=None, device=None, copy=None):
        return self._torch.as_tensor(obj, dtype=dtype, device=device)

    def astype(self, x, dtype, /, *, copy: bool = False, device=None):
        # Tensor.to returns x itself when nothing changes, as the torch-only code's `.to(dtype)` did.
        return x.to(dtype) if device is None else x.to(device, dtype)

    def arange(self, start, stop=None, step=1, *, dtype=None, device=None):
        if stop is None:
            start, stop = 0, start
        return self._torch.arange(start, stop, step, dtype=dtype, device=device)

    def ones(self, shape, *, dtype=None, device=None):
        return self._torch.ones(shape, dtype=dtype, device=device)

    def full(self, shape, fill_value, *, dtype=None, device=None):
        return self._torch.full((shape,) if isinstance(shape, int) else shape, fill_value, dtype=dtype, device=device)

    def clip(self, x, /, min=None, max=None):
        return self._torch.clamp(x, min, max)

    def concat(self, arrays, /, *, axis=0):
        return self._torch.cat(arrays, dim=axis)

    def take(self, x, indices, /, *, axis):
        return self._torch.index_select(x, axis, indices)

    def repeat(self, x, repeats, /, *, axis):
        return self._torch.repeat_interleave(x, repeats, dim=axis)

    def expand_dims(self, x, /, *, axis=0):
        return self._torch.unsqueeze(x, axis)

    def max(self, x, /, *, axis=None):
        return self._torch.amax(x) if axis is None else self._torch.amax(x, dim=axis)


class _MLX(_Fallback):
    """MLX under the standard's names where they differ. MLX has no devices on arrays (work goes to a stream),
    so `device` arguments are accepted and ignored; float64 works on the CPU stream only."""

    _base_module = "mlx.core"

    def __init__(self) -> None:
        import mlx.core as mx

        self._mx = mx
        self.float32, self.float64, self.int64, self.bool = mx.float32, mx.float64, mx.int64, mx.bool_

    def asarray(self, obj, dtype=None, device=None, copy=None):
        return self._mx.array(obj, dtype=dtype)

    def astype(self, x, dtype, /, *, copy: bool = False, device=None):
        return x if x.dtype == dtype else x.astype(dtype)

    def arange(self, start, stop=None, step=1, *, dtype=None, device=None):
        if stop is None:
            start, stop = 0, start
        return self._mx.arange(start, stop, step, dtype=dtype)

    def ones(self, shape, *, dtype=None, device=None):
        return self._mx.ones(shape, dtype=dtype or self._mx.float32)

    def full(self, shape, fill_value, *, dtype=None, device=None):
        return self._mx.full(shape, fill_value, dtype=dtype)

    def clip(self, x, /, min=None, max=None):
        return self._mx.clip(x, min, max)

    def concat(self, arrays, /, *, axis=0):
        return self._mx.concatenate(list(arrays), axis=axis)

    def take(self, x, indices, /, *, axis):
        return self._mx.take(x, indices, axis=axis)

    def repeat(self, x, repeats, /, *, axis):
        return self._mx.repeat(x, repeats, axis=axis)

    def reshape(self, x, /, shape, *, copy=None):
        return self._mx.reshape(x, shape)
