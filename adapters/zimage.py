"""Z-Image family: diffusers' ZImageTransformer2DModel (Z-Image, Z-Image-Turbo, the Omni variant) and its
RopeEmbedder.

The rope embedder is a plain object, not an nn.Module: it is replaced as an attribute, with an object of
the same shape (`theta`, `axes_dims`, `axes_lens`, called with ids [N, 3]). Theta is 256. Axis 0 orders the
sequence (captions 1.., the image after them), axes 1 and 2 are rows and columns; only those two are
rescaled. The embedder runs several times per model call (image, captions, SigLIP features): one plan per
call serves them all, sized by the generated image (in Omni mode the last latent of each sample; the
conditioning images keep their own positions).

A batch may mix diffusion times. The attention already takes tables [B, S, D/2], one row of tables per sample,
but the model calls the embedder on the ids of all samples concatenated (its `_prepare_sequence` splits the
result by each sample's id count). The patch wraps that method on the model instance to note those counts,
host integers from the stock code's own per-sample list, and the embedder gives each sample's rows its own
plan. Every element is the one-plan expression on the same operands, so a batch sharing one time is bit for bit
the one-plan tables. A model without that method (the ControlNet, which embeds its ids itself) plans once per
call and refuses a mixed batch.

The stock tables are complex64 built from float64 angles cast to float32; the replacement does the same.
Z-Image's time runs the other way: the pipeline passes (1000 - timestep) / 1000 (0 = noise), so
t = 1 - timestep.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import torch
from torch import Tensor

from dype_rope.rope import RopePlan, check_axes_dims, freq_dtype
from dype_rope.rope_formats import complex_table
from dype_rope.timestep import diffusion_time, diffusion_times

from .base import Adapter, argument_reader, register_adapter, spans_on

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_z_image import RopeEmbedder, ZImageTransformer2DModel
except ImportError:  # pragma: no cover - exercised only without diffusers
    RopeEmbedder = ZImageTransformer2DModel = None

ZIMAGE_BASE_GRID = (64, 64)  # 1024 px at 16 px per token (VAE factor 8, 2x2 patches)


class DyPERopeEmbedder:
    """Drop-in for Z-Image's RopeEmbedder: called with ids [N, 3], returns complex64 freqs_cis [N, D/2]."""

    def __init__(
        self,
        original,
        plan_of_call: Callable[[torch.device], RopePlan],
        samples_of_call: Callable[[], Sequence[int] | None] = lambda: None,
    ) -> None:
        self.theta = original.theta
        self.axes_dims = original.axes_dims
        self.axes_lens = original.axes_lens
        self.freqs_cis = original.freqs_cis
        self._plan_of_call = plan_of_call
        self._samples_of_call = samples_of_call

    def __call__(self, ids: Tensor) -> Tensor:
        if ids.ndim != 2 or ids.shape[-1] != len(self.axes_dims):
            raise ValueError(f"expected position ids [N, {len(self.axes_dims)}], got shape {tuple(ids.shape)}")
        plan = self._plan_of_call(ids.device)
        if plan.inv_freq.dim() == 1:  # one plan for the call
            return complex_table(ids, plan, angle_dtype=torch.float32)
        return per_sample_table(ids, plan, self._samples_of_call())

    def __repr__(self) -> str:
        return f"DyPERopeEmbedder(theta={self.theta}, axes_dims={list(self.axes_dims)})"


def per_sample_table(ids: Tensor, plan: RopePlan, counts: Sequence[int] | None) -> Tensor:
    """Tables of ids [N, 3], the ids of B samples one after the other (counts[b] rows each), sample b's rows under
    row b of a plan per sample ([B, D/2])."""
    inv_freq, mscale, pair_axis = plan
    if counts is None or len(counts) != inv_freq.shape[0] or sum(counts) != ids.shape[0]:
        raise RuntimeError(
            f"Z-Image's embedder got {ids.shape[0]} ids for a batch of {inv_freq.shape[0]} diffusion times, but the "
            f"model's own per-sample id counts are {counts}: the per-sample plan cannot tell the samples apart"
        )
    parts, start = [], 0
    for b, n in enumerate(counts):  # host integers: the split is a shape operation
        mine = RopePlan(inv_freq[b], mscale[b], pair_axis)
        parts.append(complex_table(ids[start : start + n], mine, angle_dtype=torch.float32))
        start += n
    return torch.cat(parts)


def generated_latent(x) -> Tensor:
    """The latent being generated: x[0] in basic mode, the last latent of the first sample in Omni mode."""
    first = x[0]
    return first[-1] if isinstance(first, (list, tuple)) else first


@register_adapter(*(c for c in (ZImageTransformer2DModel,) if c is not None))
class ZImageAdapter(Adapter):
    name = "z-image"
    pixels_per_token = 16
    rescaled_axes = (1, 2)

    def default_base_grid(self) -> tuple[int, int]:
        return ZIMAGE_BASE_GRID

    def install(self) -> None:
        model = self.model
        original = self.stock_encoding("rope_embedder", RopeEmbedder, DyPERopeEmbedder)
        axes_dims = check_axes_dims(original.axes_dims, model.config.dim // model.config.n_heads)
        if len(axes_dims) != 3:
            raise ValueError(f"the Z-Image adapter expects 3 RoPE axes (sequence, rows, cols), got {len(axes_dims)}")
        theta = float(original.theta)
        base_lens = self.axis_base_lens(len(axes_dims))
        counts = self.note_sample_counts()

        def plan_of_call(device: torch.device) -> RopePlan:
            step = self.step
            if step.timestep is None or step.grid is None:
                raise self.outside_forward()
            if step.plan is None:
                dtype = freq_dtype(device)
                spans = spans_on((1, *step.grid), dtype, device)
                # one plan per sample where the batch has several times (a shape test, fixed when compiled) and
                # the model tells the embedder where each sample's ids lie; else one for the call
                ts = step.timestep
                several = counts is not None and isinstance(ts, Tensor) and ts.dim() > 0 and ts.numel() > 1
                times = diffusion_times if several else diffusion_time
                t = times(ts, reverse=True, dtype=dtype, device=device)
                self.plan_step(t, spans, axes_dims, theta, base_lens)
            return step.plan

        read_t = argument_reader(model.forward, "t")
        read_x = argument_reader(model.forward, "x")
        read_patch = argument_reader(model.forward, "patch_size")

        def begin(args: tuple, kwargs: dict) -> None:
            step = self.step
            step.clear()
            step.timestep = read_t(args, kwargs)
            patch = int(read_patch(args, kwargs))
            height, width = generated_latent(read_x(args, kwargs)).shape[-2:]
            step.grid = (height // patch, width // patch)  # (rows, cols) of the generated image: host ints

        samples = (lambda: None) if counts is None else (lambda: getattr(counts, "value", None))
        model.rope_embedder = DyPERopeEmbedder(original, plan_of_call, samples)
        self.on_remove(lambda: setattr(model, "rope_embedder", original))
        self.hook_calls(begin)

    def note_sample_counts(self) -> threading.local | None:
        """Wrap the model's `_prepare_sequence(feats, pos_ids, ...)` on this instance so that, while it runs, the
        returned thread-local's `value` holds each sample's id count ([len(p) for p in pos_ids], the split the
        stock code applies to the embedder's output). None where the model has no such method."""
        model = self.model
        stock = getattr(type(model), "_prepare_sequence", None)
        if stock is None or "_prepare_sequence" in vars(model):
            return None
        read_ids = argument_reader(stock.__get__(model), "pos_ids")
        counts = threading.local()

        def prepare_sequence(*args, **kwargs):
            counts.value = [len(p) for p in read_ids(args, kwargs)]
            try:
                return stock(model, *args, **kwargs)
            finally:
                counts.value = None

        model._prepare_sequence = prepare_sequence
        self.on_remove(lambda: vars(model).pop("_prepare_sequence", None))
        return counts
