"""The array libraries the array-API core is tested on, each with the tolerance it is held to against torch.

A library that is not installed skips its tests; under CI (CI set in the environment) it fails them instead,
as tests/shared_code.py does for the host codebases: the README's install brings numpy, JAX, array-api-strict and MLX.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest


def require(module: str) -> Any:
    """Import `module`, or skip (fail under CI) naming what is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        message = f"{module} is not installed ({err}): these tests need it (pip install 'dype-rope[jax,mlx]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True)
class Backend:
    name: str
    rtol: float  # against torch float64 and the float64 references
    xp: Callable[[], Any]  # the library's module (imported on use)
    dtype: Callable[[Any], Any]  # its float dtype under test

    def array(self, values):
        """`values` (numbers, nested lists, numpy) as an array of this library in its float dtype under test."""
        xp = self.xp()
        values = np.asarray(values, dtype=np.float64)
        if self.name == "mlx":  # no asarray; mx.array takes numpy
            return xp.array(values, dtype=self.dtype(xp))
        return xp.asarray(values.tolist(), dtype=self.dtype(xp))

    def numpy(self, x) -> np.ndarray:
        if self.name == "array_api_strict":
            return np.from_dlpack(x)
        return np.asarray(x)


def _jax():
    jax = require("jax")
    jax.config.update("jax_enable_x64", True)  # float64 needs it (docs/backends.md)
    return require("jax.numpy")


def _numpy():
    return require("array_api_compat.numpy")


BACKENDS = [
    Backend("numpy", 1e-12, _numpy, lambda xp: xp.float64),
    Backend("jax", 1e-12, _jax, lambda xp: xp.float64),
    Backend("array_api_strict", 1e-12, lambda: require("array_api_strict"), lambda xp: xp.float64),
    Backend("mlx", 1e-5, lambda: require("mlx.core"), lambda xp: xp.float32),
]
