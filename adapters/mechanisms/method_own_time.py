"""The method mechanism (adapters/mechanisms/method.py) for models that run some passes at a time of their own.

Wan Animate 2 runs a reference pass (`kv_cache_mode="extract"`) over the driving video before the denoising steps:
the model replaces the timestep it is handed with a fixed 1 (of 1000) there, since the reference is clean, and
modulates every block with it. DyPE's time is the noise level of the tokens whose tables it builds, so that pass's
tables take the model's own time, not the one the pipeline happens to pass (the first step's). :class:`OwnTime`
wraps a :class:`~adapters.mechanisms.method.Method` row and, after the method mechanism has read the call's
timestep, puts in its place the one the model itself uses in this call: a device op on the timestep (no host
sync), chosen by host arguments only (a mode string).

Some methods keep what they return in a cache of their own (`rope_freqs_cache` per offset): the install probe's
call would leave an entry the stock model never made, so the entries it adds are taken out again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..base import argument_reader
from .method import Method, install_method


class EagerMethod:
    """A DyPE method replacement that torch.compile leaves to run eagerly (it and all it calls)."""

    def __init__(self, replacement) -> None:
        self.replacement = replacement
        self._call = torch.compiler.disable(replacement.__call__)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self.replacement)


@dataclass(frozen=True)
class OwnTime:
    """A method row whose model overrides the timestep in some calls.

    method:   the method row;
    inputs:   the forward arguments `own_time` reads besides the timestep (host values: mode strings, flags);
    own_time: (the timestep passed, *those arguments) -> the timestep the model uses in this call, as a device op
              on the one passed, or None where it uses the one passed;
    eager:    run the method's replacement outside torch.compile, for models whose forward dynamo skips (it runs
              eagerly and calls the method from eager code): compiled, the replacement's few table ops would be
              frames of their own the stock model does not have;
    caches:   names of dict attributes of the model where the method keeps what it computed (the install probe's
              entries are removed from them, so the patch leaves no trace of its own probe).
    """

    method: Method
    inputs: tuple[str, ...]
    own_time: Callable[..., Tensor | None]
    caches: tuple[str, ...] = ()
    eager: bool = False

    def describe(self) -> str:
        return self.method.describe()

    def install(self, adapter) -> None:
        model, name = adapter.model, self.method.method
        if isinstance(vars(model).get(name), EagerMethod):
            raise RuntimeError(f"{type(model).__name__}.{name} is already a DyPE method (a copy of a patched model?)")
        before = {cache: set(getattr(model, cache, None) or {}) for cache in self.caches}
        try:
            install_method(self.method, adapter)
        finally:  # the probe's entries go, whether the row was accepted or refused
            for cache, keys in before.items():
                entries = getattr(model, cache, None)
                if isinstance(entries, dict):
                    for key in set(entries) - keys:
                        del entries[key]
        if self.eager:
            setattr(model, name, EagerMethod(getattr(model, name)))  # install_method's undo takes it away
        readers = [argument_reader(model.forward, arg) for arg in self.inputs]

        # registered after the method mechanism's own hook, so it runs after that hook has read the timestep
        def begin(args: tuple, kwargs: dict) -> None:
            step = adapter.step
            if step.timestep is None:
                return
            own = self.own_time(step.timestep, *(read(args, kwargs) for read in readers))
            if own is not None:
                step.timestep = own

        adapter.hook_calls(begin)
