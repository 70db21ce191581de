"""One RoPE plan per sample through stock attention processors that only take tables shared by the batch.

FLUX, FLUX.2 and Qwen-Image rotate queries and keys with a module-level function of their transformer's file
(diffusers' `apply_rotary_emb`, `apply_rotary_emb_qwen`) that broadcasts tables [S, D] (or complex [S, D/2])
over the batch. A batch whose samples sit at different diffusion times needs tables [B, S, D] instead.

Instead of rewriting those processors, each attention module of the patched model gets, through its own
`set_processor`, a copy of its stock processor whose class is a subclass of the stock class and whose
`__call__` is the stock function itself (its code object, defaults and closure) run over a private copy of its
module's globals in which the one rotary name is wrapped. The wrapper passes tables without a batch dimension
straight to the stock function; tables [B, S, ...] it hands to the same stock function with the batch folded
into the sequence (x [B, S, ...] -> [1, B * S, ...], tables -> [B * S, ...]) and unfolds the result. Every
element is computed by the stock expression from the same operands, so a batch whose samples share a time is
bit for bit what the stock processor gives, and a mixed batch is bit for bit each sample's own rotation. No
value is read on the host: the fold is a shape operation.

Nothing global changes: the library module, its functions and its processor classes are untouched; only the
patched model's attention modules hold the new processors, and remove() puts back each original processor
(where the module still holds DyPE's: a processor the user set afterwards is left alone). The per-class
subclass is built once and cached, so a compiled model sees the same class every call.

A second route serves processors that import their rotary function inside `__call__` (CogView4,
HunyuanVideo: `from ..embeddings import apply_rotary_emb`), which no private copy of the module globals can
reach (and a private `__import__` would not survive torch.compile, which resolves imports itself). There the
family hands the processor per-sample tables in a shape the stock code already broadcasts sample by sample,
or installs a processor of its own; either way :func:`rotates_per_sample` checks it at install, on a tiny
module of the stock class, against the stock processor given each sample's own tables, bit for bit, and
:func:`processors_hold` checks per call that the model still holds only processors so checked. A diffusers
release that changes the stock code fails the probe: the family then plans once per call (a mixed batch is
refused, as before), never diverging silently.
"""

from __future__ import annotations

import copy
import types
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from .base import argument_reader


@dataclass(frozen=True)
class Rotary:
    """A rotary function a processor calls by global `name`; the sequence axis of its `x` is
    `sequence_dim(value)` of the call's argument `argument` (diffusers' apply_rotary_emb: its `sequence_dim`;
    Qwen-Image's: 1 for complex tables, 2 for real ones, from `use_real`). `table_batch_axis` is where the
    tables DyPE hands this family carry the batch (FLUX.2 concatenates text and image tables along axis 0, so
    its tables are [S, B, D])."""

    name: str
    argument: str
    sequence_dim: Callable[[object], int] = int
    table_batch_axis: int = 0


def _fold(x: Tensor, sequence_dim: int) -> tuple[Tensor, tuple[int, ...]]:
    """x with its batch axis moved just before the sequence axis and merged with it, behind a leading 1."""
    moved = x.movedim(0, sequence_dim - 1)
    shape = tuple(moved.shape)
    s = sequence_dim - 1
    return moved.reshape(1, *shape[:s], shape[s] * shape[s + 1], *shape[s + 2 :]), shape


def _unfold(out: Tensor, shape: tuple[int, ...], sequence_dim: int) -> Tensor:
    return out.reshape(shape).movedim(sequence_dim - 1, 0)


def _tables(freqs) -> list[Tensor]:
    return list(freqs) if isinstance(freqs, (tuple, list)) else [freqs]


def per_sample_rotary(stock: Callable, rotary: Rotary) -> Callable:
    """`stock` taking tables [S, ...] as it always did, and tables [B, S, ...] one sample's rows per sample."""
    # read by position or keyword, resolved once here: inspect's binding does not compile into the graph
    read = argument_reader(stock, rotary.argument)
    axis = rotary.table_batch_axis

    def rotate(x: Tensor, freqs, *args, **kwargs):
        tables = _tables(freqs)
        if tables[0].dim() == 2:  # [S, D]: shared by the batch, the stock call as it was
            return stock(x, freqs, *args, **kwargs)
        dim = rotary.sequence_dim(read((x, freqs, *args), kwargs))
        batch = x.shape[0]
        flat, shape = _fold(x, dim)
        tables = [t.movedim(axis, 0) for t in tables]
        folded = [t.expand(batch, *t.shape[1:]).reshape(-1, *t.shape[2:]) for t in tables]
        flat_freqs = tuple(folded) if isinstance(freqs, (tuple, list)) else folded[0]
        out = stock(flat, flat_freqs, *args, **kwargs)
        return _unfold(out, shape, dim)

    rotate.__wrapped__ = stock
    return rotate


_CLASSES: dict[tuple[type, Rotary], type] = {}


def _processor_class(stock_cls: type, rotary: Rotary) -> type:
    """A subclass of `stock_cls` whose __call__ is the stock one reading `rotary.name` from a private copy of its
    globals where that name is wrapped by per_sample_rotary. Built once per (class, rotary declaration)."""
    key = (stock_cls, rotary)
    if key not in _CLASSES:
        call = stock_cls.__call__
        scope = dict(call.__globals__)
        if rotary.name not in scope:
            raise TypeError(f"{stock_cls.__qualname__}.__call__ has no global {rotary.name!r} to give per-sample tables")
        scope[rotary.name] = per_sample_rotary(scope[rotary.name], rotary)
        new_call = types.FunctionType(call.__code__, scope, call.__name__, call.__defaults__, call.__closure__)
        new_call.__kwdefaults__ = call.__kwdefaults__
        new_call.__qualname__ = call.__qualname__
        new_call.__doc__ = call.__doc__
        attrs = {"__call__": new_call, "__module__": __name__, "__doc__": f"{stock_cls.__name__} taking per-sample tables"}
        _CLASSES[key] = type(f"PerSample{stock_cls.__name__}", (stock_cls,), attrs)
    return _CLASSES[key]


def install_per_sample_processors(adapter, processors: dict[type, Rotary]) -> Callable[[], bool]:
    """Give every attention module of `adapter.model` whose processor class is in `processors` (by exact class)
    the per-sample copy of its processor, undone by remove(). Returns a check, cheap and host-only, that every
    processor of the model is still one of these (a processor set later, an IP-Adapter's, takes shared tables
    only): the adapter plans per sample only while it holds."""
    swapped: list[tuple[nn.Module, object]] = []
    others: list[nn.Module] = []
    for module in adapter.model.modules():
        original = getattr(module, "processor", None)
        if original is None or not hasattr(module, "set_processor"):
            continue
        rotary = processors.get(type(original))
        if rotary is None:
            others.append(module)
            continue
        mine = copy.copy(original)
        mine.__class__ = _processor_class(type(original), rotary)
        module.set_processor(mine)
        swapped.append((module, mine))

        def undo(module=module, original=original, mine=mine) -> None:
            if module.processor is mine:
                module.set_processor(original)

        adapter.on_remove(undo)

    def all_per_sample() -> bool:
        return bool(swapped) and not others and all(m.processor is p for m, p in swapped)

    return all_per_sample


# -- the second route: per-sample tables the processor broadcasts itself, probed at install ---------------------


def rotates_per_sample(
    attn: nn.Module,
    mine: Callable,
    stock: Callable,
    inputs: dict,
    tables: Sequence[tuple[Tensor, Tensor]],
    batched: Callable[[Sequence[tuple[Tensor, Tensor]]], object],
) -> str | None:
    """None where `mine(attn, **inputs, image_rotary_emb=batched(tables))` gives, for every sample b, bit for bit
    what `stock` gives sample b with its own tables[b] (the same batch, so the projections are the same GEMMs),
    and where `mine` given shared tables is bit for bit `stock`; else what differed. The inputs carry one sample
    per entry of `tables`, each sample's tables [S, D] in the stock format."""
    with torch.no_grad():
        mixed = tree_leaves(mine(attn, **inputs, image_rotary_emb=batched(tables)))
        for b, own in enumerate(tables):
            theirs = tree_leaves(stock(attn, **inputs, image_rotary_emb=own))
            if len(theirs) != len(mixed) or not all(torch.equal(m[b], a[b]) for m, a in zip(mixed, theirs)):
                return f"sample {b} of a batch given per-sample tables differs from the stock processor given its own"
            shared = tree_leaves(mine(attn, **inputs, image_rotary_emb=own))
            if not all(torch.equal(m, a) for m, a in zip(shared, theirs, strict=True)):
                return "given tables shared by the batch it differs from the stock processor"
    return None


def probed(family: str, probe: Callable[[], str | None]) -> bool:
    """Run `probe` (a rotates_per_sample check on a tiny stock module) without touching the global random
    state; on a mismatch warn once and return False: the family then plans once per call."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        failure = probe()
    if failure is not None:
        warnings.warn(
            f"dype_rope: {family}'s stock attention processor no longer matches what DyPE's per-sample tables rely "
            f"on ({failure}); this install plans once per call, and a batch mixing diffusion times above the base "
            "grid is refused",
            RuntimeWarning,
            stacklevel=3,
        )
    return failure is None


def processors_hold(model: nn.Module, classes: tuple[type, ...]) -> Callable[[], bool]:
    """A check, cheap and host-only, that every attention processor of `model` is of one of `classes` (by exact
    class): a processor set later (an IP-Adapter's, a training processor) takes shared tables only."""
    modules = [m for m in model.modules() if hasattr(m, "set_processor") and getattr(m, "processor", None) is not None]

    def hold() -> bool:
        return bool(modules) and all(type(m.processor) in classes for m in modules)

    return hold
