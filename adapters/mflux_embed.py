"""The MLX half of the mflux adapter (adapters/mflux.py): imported only when an mflux model is patched."""

from __future__ import annotations

import mlx.core as mx
from mlx import nn

from dype_rope.rope import build_plan, check_axes_dims
from dype_rope.rope_formats import rope_angles, rotation_matrices

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


def swap_call(adapter, begin) -> None:
    """Give the model a class made for this patch whose `__call__` runs `begin(args, kwargs)` (filling the step
    context), then the stock `__call__`, then clears the context. The class holds the adapter and the model holds
    the class, so the patch lives exactly as long as the model; remove() puts the stock class back."""
    model, stock_cls = adapter.model, type(adapter.model)

    def __call__(self, *args, **kwargs):
        step = adapter.step
        step.clear()
        begin(args, kwargs)
        try:
            return stock_cls.__call__(self, *args, **kwargs)
        finally:
            step.clear()

    model.__class__ = type(f"DyPE{stock_cls.__name__}", (stock_cls,), {"__call__": __call__, "__module__": __name__})
    adapter.on_remove(lambda: setattr(model, "__class__", stock_cls))


def replace_pos_embed(adapter, make) -> None:
    """model.pos_embed = make(original), undone by remove(); refuses an embedding DyPE already replaced."""
    model = adapter.model
    original = model.pos_embed
    if isinstance(original, (DyPEEmbedND, DyPEFlux2PosEmbed)):
        raise RuntimeError(f"{type(model).__name__}.pos_embed is already a DyPE embedding (a copy of a patched model?)")
    model.pos_embed = make(original)
    adapter.on_remove(lambda: setattr(model, "pos_embed", original))


def install_mflux(adapter) -> None:
    """FLUX.1: the time is the scheduler's sigma of step `t`, the grid the config's size."""
    model = adapter.model
    original = model.pos_embed
    if not (hasattr(original, "theta") and hasattr(original, "axes_dim")) or len(original.axes_dim) != 3:
        raise TypeError(f"{type(model).__name__}.pos_embed is {type(original).__name__}, not mflux's 3-axis EmbedND")
    read_t = argument_reader(model.__call__, "t")
    read_config = argument_reader(model.__call__, "config")

    def begin(args, kwargs) -> None:
        step = adapter.step
        config = read_config(args, kwargs)
        step.timestep = sigma_of(config, read_t(args, kwargs))
        step.grid = (config.height // TOKEN_PX, config.width // TOKEN_PX)

    replace_pos_embed(adapter, lambda stock: DyPEEmbedND(stock, adapter))
    swap_call(adapter, begin)


# -- FLUX.2 (Klein) ----------------------------------------------------------------------------------------------

def flux2_time(timestep) -> mx.array:
    """t in [0, 1] (1 = noise) from Flux2Transformer's `timestep`: the sampler's sigma, or sigma * 1000, told apart
    on the device exactly as mflux does (values <= 1 are sigmas). A batch shares the first sample's time."""
    ts = timestep if isinstance(timestep, mx.array) else mx.array(timestep, dtype=mx.float32)
    ts = ts.reshape(-1).astype(mx.float32)
    return mx.where(mx.max(ts) <= 1.0, ts[0], ts[0] / 1000.0)


def flux2_spans(img_ids: mx.array) -> mx.array:
    """Extent in tokens of every ids axis (T, H, W, L) of the generated image: tokens on the first T index only
    (reference images sit on later ones), max - min + 1, computed on the device."""
    ids = (img_ids[0] if img_ids.ndim == 3 else img_ids).astype(mx.float32)
    mine = (ids[:, 0] == mx.min(ids[:, 0]))[:, None]
    high = mx.max(mx.where(mine, ids, -mx.inf), axis=0)
    low = mx.min(mx.where(mine, ids, mx.inf), axis=0)
    return high - low + 1


class DyPEFlux2PosEmbed(nn.Module):
    """Drop-in for mflux's Flux2PosEmbed: ids [L, 4] -> (cos, sin) [L, D/2] float32.

    One plan per model call, from the image ids the call was given (the text's embedding uses the image's plan,
    as DyPE's FLUX.2 adapter for diffusers does); pairs of unstretched axes keep the original's numbers, chosen
    per pair on the device."""

    def __init__(self, original: nn.Module, adapter) -> None:
        super().__init__()
        self.theta, self.axes_dim = original.theta, original.axes_dim
        object.__setattr__(self, "_original", original)
        object.__setattr__(self, "_adapter", adapter)
        object.__setattr__(self, "_axes_dims", check_axes_dims(original.axes_dim))

    def __call__(self, ids: mx.array):
        stock_cos, stock_sin = self._original(ids)
        adapter = self._adapter
        step = adapter.step
        if step.timestep is None:
            raise adapter.outside_forward()
        if step.plan is None:
            spans = flux2_spans(step.ids)
            scales = adapter.device_scales(spans)
            step.scales = scales
            step.plan = build_plan(self._axes_dims, float(self.theta), scales, flux2_time(step.timestep), adapter.cfg,
                                   adapter.axis_base_lens(len(self._axes_dims)))
        plan = step.plan
        angles = rope_angles(ids, plan)
        stretched = mx.take(step.scales, plan.pair_axis) > 1
        cos = (mx.cos(angles) * plan.mscale).astype(stock_cos.dtype)
        sin = (mx.sin(angles) * plan.mscale).astype(stock_sin.dtype)
        return mx.where(stretched, cos, stock_cos), mx.where(stretched, sin, stock_sin)


def install_mflux_flux2(adapter) -> None:
    """FLUX.2: the time is the call's `timestep`, the grid the extent of its `img_ids`."""
    model = adapter.model
    original = model.pos_embed
    if not (hasattr(original, "theta") and hasattr(original, "axes_dim")) or len(original.axes_dim) != 4:
        raise TypeError(f"{type(model).__name__}.pos_embed is {type(original).__name__}, not mflux's Flux2PosEmbed")
    read_t = argument_reader(model.__call__, "timestep")
    read_ids = argument_reader(model.__call__, "img_ids")

    def begin(args, kwargs) -> None:
        step = adapter.step
        step.timestep = read_t(args, kwargs)
        step.ids = read_ids(args, kwargs)

    replace_pos_embed(adapter, lambda stock: DyPEFlux2PosEmbed(stock, adapter))
    swap_call(adapter, begin)
