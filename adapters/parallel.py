"""Keeping diffusers' context parallelism on a position-encoding module that an adapter replaces.

Models that compute RoPE for the whole sequence and shard its output (Wan, Qwen-Image) list the RoPE module
in their `_cp_plan`; `enable_parallelism` (or `from_pretrained(..., parallel_config=...)`) then wraps that
module's `forward` with a split hook. A replacement installed afterwards would not carry the hook and would
hand every rank the whole table. :func:`carry_parallel_hooks` gives the replacement hooks of the same kind,
leaving the original's untouched, so that either order of `patch` and `enable_parallelism` shards the same
way, and `remove()` puts back a module that still has its own.
"""

from __future__ import annotations

import copy

from torch import nn

try:  # diffusers is optional
    from diffusers.hooks.context_parallel import ContextParallelGatherHook, ContextParallelSplitHook
    from diffusers.hooks.hooks import HookRegistry
except ImportError:  # pragma: no cover - exercised only without diffusers
    HookRegistry = None
    CONTEXT_PARALLEL_HOOKS: tuple[type, ...] = ()
else:
    CONTEXT_PARALLEL_HOOKS = (ContextParallelSplitHook, ContextParallelGatherHook)


def carry_parallel_hooks(source: nn.Module, target: nn.Module) -> None:
    """Register on `target` a copy of every context-parallel hook `source` carries and `target` lacks, in
    the same order.

    Other diffusers hooks (caches, offloading) are left alone: a RoPE module has no weights to offload, and
    a cache hook keyed to the old module must not be duplicated.
    """
    registry = getattr(source, "_diffusers_hook", None)
    if HookRegistry is None or registry is None:
        return
    for name in registry._hook_order:
        hook = registry.hooks[name]
        present = getattr(target, "_diffusers_hook", None)
        if isinstance(hook, CONTEXT_PARALLEL_HOOKS) and (present is None or name not in present.hooks):
            HookRegistry.check_if_exists_or_initialize(target).register_hook(copy.copy(hook), name)


def swap_module(adapter, attr: str, replacement: nn.Module) -> None:
    """Put `replacement` at `adapter.model.<attr>`, with the context-parallel hooks carried over both ways
    (enable_parallelism may run before the patch, or while it is on), undone by the adapter's remove()."""
    model = adapter.model
    original = getattr(model, attr)
    carry_parallel_hooks(original, replacement)
    setattr(model, attr, replacement)
    adapter.on_remove(lambda: setattr(model, attr, original))
    adapter.on_remove(lambda: carry_parallel_hooks(replacement, original))
