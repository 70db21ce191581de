"""Complex-table grid modules for the grid mechanism (adapters/mechanisms/grid.py), and models that time every
latent frame apart.

Some grid-built RoPE modules keep their frequencies complex: `freqs_cis` [..., L, D/2], one complex number
e^(i angle) per pair, which the attention multiplies into q and k viewed as complex. :class:`Complex` is that
output format (Sana-WM): DyPE's (m cos, m sin) become m e^(i angle) in the stock complex dtype, so a table of
modulus m carries YaRN's attention factor, and every pair DyPE leaves untouched keeps the stock number
(torch.where on the device, complex tensors included). :class:`ComplexQueryKey` is the same table handed to the
attention as {"query": table, "key": table} (AnyFlow; complex128, complex64 where the device has no float64).

:class:`FrameTimedGrid` wraps a :class:`~adapters.mechanisms.grid.Grid` for models whose timestep carries a
frame axis besides the batch ([B, 1, T]: one noise level per latent frame, the conditioning frame at 0): the
generated frames sit at the largest noise level of the call, which the grid mechanism takes over every
timestep but the batch's. Forward arguments that hand the model precomputed tables (which would bypass the
module DyPE replaces) are refused with a message instead of being silently left stock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import Tensor

from .grid import Grid, install_grid
from .grid_formats import _Merging, fit


@dataclass(frozen=True)
class Complex(_Merging):
    """One complex tensor [..., L, D/2] (freqs_cis) of m e^(i angle) per pair, token-major."""

    def describe(self) -> str:
        return "complex"

    def assemble(self, stock, cos: Tensor, sin: Tensor):
        if not (isinstance(stock, Tensor) and stock.is_complex()):
            raise ValueError(f"the stock output is not one complex tensor but {type(stock).__name__}")
        return fit(torch.complex(cos, sin).to(stock.dtype), stock)

    def pair_mask(self, untouched: Tensor, stock) -> Tensor:
        if untouched.dim() > 1:
            raise ValueError("complex tables without a batch dimension take one plan per call")
        return untouched

    def matches(self, stock: Any, cos: Tensor, sin: Tensor) -> tuple[bool, str]:
        """As the other formats, on the real and imaginary parts both (a real cast would drop the sines)."""
        try:
            table = self.assemble(stock, cos, sin)
        except Exception as err:  # wrong structure or size: not this format
            return False, str(err)
        if stock.shape != table.shape:
            return False, f"got a table of shape {tuple(stock.shape)}, expected {tuple(table.shape)}"
        got, want = torch.view_as_real(stock).double(), torch.view_as_real(table).double()
        if not torch.allclose(got, want, atol=1e-5, rtol=1e-5):
            return False, f"got a table of shape {tuple(stock.shape)} that differs from the declared one"
        return True, ""



@dataclass(frozen=True)
class ComplexQueryKey:
    """{"query": table, "key": table}: one :class:`Complex` table, token-major, without a batch dimension."""

    def describe(self) -> str:
        return "complex e^(i angle) per pair, query / key dict"

    @staticmethod
    def _table(stock: Any) -> Tensor:
        if not (isinstance(stock, dict) and set(stock) == {"query", "key"}):
            raise ValueError(f"the stock output is not a {{'query', 'key'}} dict but {type(stock).__name__}")
        if stock["query"] is not stock["key"]:
            # two different tables would need two merges; the modules this format describes return one
            raise ValueError("the stock output's query and key tables are not the same tensor")
        return stock["query"]

    def merge(self, stock: Any, cos: Tensor, sin: Tensor, untouched: Tensor) -> dict:
        """The stock tables with DyPE's numbers on every pair not `untouched` ([D/2] bool)."""
        merged = Complex().merge(self._table(stock), cos, sin, untouched)
        return {"query": merged, "key": merged}

    def matches(self, stock: Any, cos: Tensor, sin: Tensor) -> tuple[bool, str]:
        try:
            table = self._table(stock)
        except ValueError as err:  # wrong structure: not this format
            return False, str(err)
        return Complex().matches(table, cos, sin)


# (args, kwargs) of a model call -> why it cannot be patched (a precomputed table it was handed), or None
Refusal = Callable[[tuple, dict], "str | None"]


@dataclass(frozen=True)
class FrameTimedGrid:
    """A grid row whose model takes per-frame timesteps [B, 1, T] (any shape [B, ...]) and may be handed
    precomputed tables (`refusal` says when; None where it never is)."""

    grid: Grid
    refusal: Refusal | None = None

    def describe(self) -> str:
        return self.grid.describe()

    def install(self, adapter) -> None:
        model, name = adapter.model, adapter.family.module
        if getattr(model, name, None) is None:
            raise TypeError(f"{type(model).__name__} has no RoPE module at {name!r} (built without one?): nothing to patch")
        inner = self.grid.positions

        def positions(module, args: tuple, kwargs: dict) -> Tensor:
            # Called in the module's forward, before the call's plan is built: the reshape stays in the model's
            # graph (a tensor op in a call hook would compile into a graph of its own).
            step = adapter.step
            timestep = step.timestep
            if step.plan is None and isinstance(timestep, Tensor) and timestep.dim() > 2:
                # [B, 1, T] -> [B, T]: the grid mechanism takes the largest time of every sample
                step.timestep = timestep.flatten(1)
            return inner(module, args, kwargs)

        install_grid(replace(self.grid, positions=positions), adapter)
        refusal = self.refusal
        if refusal is not None:

            def begin(args: tuple, kwargs: dict) -> None:
                why = refusal(args, kwargs)
                if why is not None:
                    raise ValueError(f"{type(adapter.model).__name__} patched by dype_rope: {why}")

            adapter.hook_calls(begin)
