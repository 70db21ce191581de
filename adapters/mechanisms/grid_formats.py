"""Output formats of grid-built RoPE modules (adapters/mechanisms/grid.py): how a stock module's output holds
the (m cos, m sin) of every pair of every token.

A format turns DyPE's per-pair tables [..., L, D/2] into the stock output's structure (`assemble`) and says which
of its numbers belong to which pair (`pair_mask`), so that `merge` keeps the stock number on every pair DyPE
leaves untouched. Formats whose output carries a batch dimension also take per-sample tables [B, L, D/2] and
masks [B, D/2] (one plan per sample). Token-major outputs of any leading shape ([L, D], [1, L, 1, D], [B, F, H, W, 1, D/2, 2, 2])
are matched by reshaping; a batch the stock module repeats is expanded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from dype_rope.rope import check_layout


def fit(table: Tensor, stock: Tensor) -> Tensor:
    """A token-major table reshaped to the stock tensor's shape; expanded over a batch the stock repeats."""
    if table.numel() == stock.numel():
        return table.reshape(stock.shape)
    if stock.dim() and table.numel() * stock.shape[0] == stock.numel():
        return table.reshape(1, *stock.shape[1:]).expand(stock.shape)
    raise ValueError(f"a table of {table.numel()} numbers does not fit the stock output of shape {tuple(stock.shape)}")


def expand_pairs(x: Tensor, layout: str) -> Tensor:
    """[..., D/2] per-pair values -> [..., D] channels: pairs (2j, 2j+1) or (j, j + D/2)."""
    return x.repeat_interleave(2, dim=-1) if layout == "interleaved" else torch.cat([x, x], dim=-1)


class Format(Protocol):
    def assemble(self, stock: Any, cos: Tensor, sin: Tensor) -> Any: ...

    def pair_mask(self, untouched: Tensor, stock: Any) -> Tensor: ...


def _where(mask: Tensor, stock: Tensor, table: Tensor) -> Tensor:
    return torch.where(mask, stock, table)


class _Merging:
    def merge(self, stock: Any, cos: Tensor, sin: Tensor, untouched: Tensor) -> Any:
        """The stock output with DyPE's numbers on every pair not `untouched` ([D/2] bool)."""
        mask = self.pair_mask(untouched, stock)
        table = self.assemble(stock, cos, sin)
        if isinstance(stock, Tensor):
            return _where(mask, stock, table)
        return type(stock)(_where(mask, s, t) for s, t in zip(stock, table))

    def matches(self, stock: Any, cos: Tensor, sin: Tensor) -> tuple[bool, str]:
        """Whether a stock output equals the tables cos / sin in this format (within float32 rounding)."""
        try:
            table = self.assemble(stock, cos, sin)
        except Exception as err:  # wrong structure or size: not this format
            return False, str(err)
        pairs = [(stock, table)] if isinstance(stock, Tensor) else list(zip(stock, table))
        for s, t in pairs:
            if s.shape != t.shape or not torch.allclose(s.double(), t.double(), atol=1e-5, rtol=1e-5):
                return False, f"got a table of shape {tuple(s.shape)} that differs from the declared one"
        return True, ""


@dataclass(frozen=True)
class CosSin(_Merging):
    """(cos, sin), each [..., L, D] token-major, pairs interleaved (Wan, HunyuanVideo) or split in halves
    (GLM-Image)."""

    layout: str = "interleaved"

    def describe(self) -> str:
        return f"(cos, sin) {self.layout}"

    def __post_init__(self) -> None:
        check_layout(self.layout)

    def assemble(self, stock, cos: Tensor, sin: Tensor):
        if not (isinstance(stock, tuple) and len(stock) == 2 and all(isinstance(s, Tensor) for s in stock)):
            raise ValueError(f"the stock output is not a (cos, sin) pair of tensors but {type(stock).__name__}")
        return tuple(fit(expand_pairs(x, self.layout).to(s.dtype), s) for x, s in zip((cos, sin), stock))

    def pair_mask(self, untouched: Tensor, stock) -> Tensor:
        if untouched.dim() > 1:
            raise ValueError("(cos, sin) tables without a batch dimension take one plan per call")
        return expand_pairs(untouched, self.layout)


@dataclass(frozen=True)
class CosSinChannelsFirst(_Merging):
    """One tensor [B, 2D, F, H, W]: the cos channels of every pair, then the sin channels, interleaved within
    each (Helios), for positions [B, F * H * W, n]."""

    def describe(self) -> str:
        return "(cos, sin) channels first"

    def assemble(self, stock, cos: Tensor, sin: Tensor):
        if not (isinstance(stock, Tensor) and stock.dim() == 5):
            raise ValueError("the stock output is not one [B, 2D, F, H, W] tensor")
        table = torch.cat([expand_pairs(cos, "interleaved"), expand_pairs(sin, "interleaved")], dim=-1)
        b, _, f, h, w = stock.shape
        table = table.reshape(-1, f, h, w, table.shape[-1]).permute(0, 4, 1, 2, 3)
        return table.to(stock.dtype).expand(b, *table.shape[1:])

    def pair_mask(self, untouched: Tensor, stock) -> Tensor:
        channels = expand_pairs(untouched, "interleaved")
        both = torch.cat([channels, channels], dim=-1)  # [(B,) 2D]
        return both.reshape(*both.shape, 1, 1, 1)


@dataclass(frozen=True)
class RotationMatrices(_Merging):
    """One tensor [..., L, (1,) D/2, 2, 2] of [[cos, -sin], [sin, cos]] per pair (Kandinsky 5)."""

    def describe(self) -> str:
        return "rotation matrices"

    def assemble(self, stock, cos: Tensor, sin: Tensor):
        if not isinstance(stock, Tensor) or stock.shape[-2:] != (2, 2):
            raise ValueError("the stock output is not one tensor of 2 x 2 rotation matrices")
        table = torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))
        return fit(table.to(stock.dtype), stock)

    def pair_mask(self, untouched: Tensor, stock) -> Tensor:
        if untouched.dim() == 1:
            return untouched.view(-1, 1, 1)
        # per sample: the batch on the stock's first axis, the pairs on its fourth from last
        return untouched.reshape(untouched.shape[0], *(1,) * (stock.dim() - 4), untouched.shape[-1], 1, 1)
