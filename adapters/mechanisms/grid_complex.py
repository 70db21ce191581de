"""Complex output formats of grid-built RoPE modules (adapters/mechanisms/grid.py).

AnyFlow's modules return one complex table e^(i angle) per pair and token, [1, 1, L, D/2], handed to the attention
as {"query": table, "key": table} (the same tensor twice); the attention multiplies the pairs (x[2j], x[2j+1]) read
as complex numbers by it, so a table of modulus m carries YaRN's attention factor as the (m cos, m sin) of the
other formats do. The stock table is complex128 (complex64 where the device has no float64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .grid_formats import fit


def _complex_table(stock: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    if not (isinstance(stock, Tensor) and stock.is_complex()):
        raise ValueError(f"the stock table is not a complex tensor but {type(stock).__name__}")
    real = stock.real.dtype  # float64 for complex128, float32 for complex64
    return fit(torch.complex(cos.to(real), sin.to(real)), stock)


@dataclass(frozen=True)
class ComplexQueryKey:
    """{"query": table, "key": table}: one complex [..., L, D/2] table, token-major, without a batch dimension."""

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
        if untouched.dim() > 1:
            raise ValueError("complex tables without a batch dimension take one plan per call")
        table = self._table(stock)
        merged = torch.where(untouched, table, _complex_table(table, cos, sin))
        return {"query": merged, "key": merged}

    def matches(self, stock: Any, cos: Tensor, sin: Tensor) -> tuple[bool, str]:
        """Whether a stock output holds the tables cos / sin in this format (within float32 rounding)."""
        try:
            table = self._table(stock)
            want = _complex_table(table, cos, sin)
        except Exception as err:  # wrong structure or size: not this format
            return False, str(err)
        if table.shape != want.shape or not torch.allclose(
            torch.view_as_real(table).double(), torch.view_as_real(want).double(), atol=1e-5, rtol=1e-5
        ):
            return False, f"got a table of shape {tuple(table.shape)} that differs from the declared one"
        return True, ""
