"""The MLX half of the mflux adapter (adapters/mflux.py): imported only when an mflux model is patched."""

from __future__ import annotations

import mlx.core as mx
from mlx import nn

from dype_rope.rope import build_plan, check_axes_dims
from dype_rope.rope_formats import rotation_matrices

from .base import argument_reader

TOKEN_PX = 16


class DyPEEmbedND(nn.Module):
    """Drop-in for mflux's EmbedND: ids [B, L, 3] -> rotation matrices [B, 1, L, D/2, 2, 2].

    The original is called on every call; the pairs of a stretched axis take DyPE's matrices, every other pair
    keeps the original's. Which axes are stretched is known on the host (the image size), so an image at or
    below the base grid returns the original's output itself, with no extra work.
    """

    def __init__(self, original: nn.Module, adapter) -> None:
        super().__init__()
        # The same attributes as mflux's EmbedND; the original and the adapter are kept out of the module tree
        # (instance attributes, not dict entries), so parameters() and the weights' keys stay as they were.
        self.dim, self.theta, self.axes_dim = original.dim, original.theta, original.axes_dim
        object.__setattr__(self, "_original", original)
        object.__setattr__(self, "_adapter", adapter)
        object.__setattr__(self, "_axes_dims", check_axes_dims(original.axes_dim))

    def __call__(self, ids: mx.array) -> mx.array:
        stock = self._original(ids)
        adapter = self._adapter
        step = adapter.step
        if step.timestep is None:
            raise adapter.outside_forward()
        ratios = adapter.axis_ratios(step.grid)
        if all(r <= 1 for r in ratios):
            return stock
        plan = build_plan(self._axes_dims, float(self.theta), mx.array(ratios, dtype=mx.float32),
                          step.timestep.astype(mx.float32), adapter.cfg, adapter.axis_base_lens(len(ratios)))
        step.plan = plan
        dype = mx.expand_dims(rotation_matrices(ids, plan), axis=1)
        stretched = mx.array([ratios[a] > 1 for a, d in enumerate(self._axes_dims) for _ in range(d // 2)])
        return mx.where(stretched[:, None, None], dype.astype(stock.dtype), stock)


def sigma_of(config, t) -> mx.array:
    """The diffusion time of step `t` from mflux's scheduler (a 0-d array, 1 = noise; never read on the host)."""
    sigmas = getattr(getattr(config, "scheduler", None), "sigmas", None)
    if sigmas is None:
        raise TypeError(
            f"mflux called the transformer with a {type(config).__name__} whose scheduler has no `sigmas`; DyPE "
            "reads the diffusion time of step t from config.scheduler.sigmas[t]"
        )
    return sigmas[t]


def install_mflux(adapter) -> None:
    model = adapter.model
    original = model.pos_embed
    if isinstance(original, DyPEEmbedND):
        raise RuntimeError(f"{type(model).__name__}.pos_embed is already a DyPE embedding (a copy of a patched model?)")
    if not (hasattr(original, "theta") and hasattr(original, "axes_dim")) or len(original.axes_dim) != 3:
        raise TypeError(f"{type(model).__name__}.pos_embed is {type(original).__name__}, not mflux's 3-axis EmbedND")
    read_t = argument_reader(model.__call__, "t")
    read_config = argument_reader(model.__call__, "config")
    stock_cls = type(model)

    def __call__(self, *args, **kwargs):
        step = adapter.step
        step.clear()
        config = read_config(args, kwargs)
        step.timestep = sigma_of(config, read_t(args, kwargs))
        step.grid = (config.height // TOKEN_PX, config.width // TOKEN_PX)
        try:
            return stock_cls.__call__(self, *args, **kwargs)
        finally:
            step.clear()

    # A subclass made for this patch: the class holds the adapter, the model holds the class, so the patch lives
    # exactly as long as the model (nothing global points at either).
    patched_cls = type(f"DyPE{stock_cls.__name__}", (stock_cls,), {"__call__": __call__, "__module__": __name__})
    model.pos_embed = DyPEEmbedND(original, adapter)
    adapter.on_remove(lambda: setattr(model, "pos_embed", original))
    model.__class__ = patched_cls
    adapter.on_remove(lambda: setattr(model, "__class__", stock_cls))
