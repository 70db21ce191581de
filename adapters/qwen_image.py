"""Qwen-Image family: diffusers' QwenImageTransformer2DModel (Qwen-Image, Qwen-Image-Edit, -Edit-Plus) and
its QwenEmbedRope.

Its layout differs from FLUX in three ways this adapter follows exactly:
- positions are centred: an image of h rows has row positions -(h - h//2) .. h//2 - 1 (same for columns);
  the frame axis holds the image's index in the call (0 = generated image, 1.. = conditioning images);
- text token k sits at position (m + k) on all three axes, m = the largest half-extent of all images;
- stock tables are complex64, computed in float32 from a precomputed 4096-row table and cached with
  lru_cache per (size, device). The DyPE tables depend on t as well, so they are computed in every call and
  never cached: no call can receive a table built for another t or size.
Rows and columns are rescaled, the frame axis never is; the scale comes from the generated image (the first
entry of img_shapes): conditioning images and text keep their positions and share its frequencies.

A batch may mix diffusion times: the attention modules get per-sample copies of their stock processors
(per_sample.py), whose `apply_rotary_emb_qwen` takes complex tables [B, N, D/2], one plan per sample. Not under
context parallelism: the model's parallel plan splits the embedding's outputs as [N, D/2], so a parallel model
(like one holding a processor without a per-sample copy, or backend="triton") plans once per call and refuses a
mixed batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from dype_rope.rope import RopePlan, check_axes_dims, freq_dtype
from dype_rope.schedules import plain_inv_freq
from dype_rope.timestep import diffusion_time, diffusion_times

from .base import Adapter, register_adapter, spans_on
from .parallel import swap_module
from .per_sample import Rotary, install_per_sample_processors
from .qwen_image_embed import DyPEQwenEmbedRope

try:  # diffusers is optional: without it the adapter simply never matches
    from diffusers.models.transformers.transformer_qwenimage import (
        QwenDoubleStreamAttnProcessor2_0,
        QwenEmbedRope,
        QwenImageTransformer2DModel,
    )
except ImportError:  # pragma: no cover - exercised only without diffusers
    QwenDoubleStreamAttnProcessor2_0 = QwenEmbedRope = QwenImageTransformer2DModel = None

# apply_rotary_emb_qwen(x [B, S, H, D], freqs, use_real): complex freqs [S, D/2] are unsqueezed to [S, 1, D/2]
# (the sequence is x's axis 1); real ones are indexed [None, None] (axis 2)
QWEN_ROTARY = Rotary("apply_rotary_emb_qwen", "use_real", sequence_dim=lambda use_real: 2 if use_real else 1)

# Qwen-Image is trained up to 1328 x 1328 px (the resolution its model card and the community use);
# 16 px per token (VAE factor 8, 2x2 packing) gives 83 tokens per side.
QWEN_IMAGE_BASE_GRID = (83, 83)


def native_precision(plan: RopePlan, scales: Tensor, theta: float, axes_dims: Sequence[int]) -> RopePlan:
    """The plan in float32, Qwen-Image's own precision: pairs of axes that are not rescaled take QwenEmbedRope's
    float32 frequencies exactly (so at or below the base grid the tables match the stock ones bit for bit);
    rescaled pairs take the float64 schedule rounded once."""
    one = torch.ones((), dtype=torch.float32, device=scales.device)
    stock = torch.cat([plain_inv_freq(d, theta, one) for d in axes_dims])
    rescaled = (scales > 1).index_select(0, plan.pair_axis)
    inv_freq = torch.where(rescaled, plan.inv_freq.float(), stock)
    return RopePlan(inv_freq, plan.mscale.float(), plan.pair_axis)


@register_adapter(*(c for c in (QwenImageTransformer2DModel,) if c is not None))
class QwenImageAdapter(Adapter):
    name = "qwen-image"
    pixels_per_token = 16
    rescaled_axes = (1, 2)
    fused_attention = True  # backend="triton" swaps in the fused processors (qwen_image_fused.py)

    def default_base_grid(self) -> tuple[int, int]:
        return QWEN_IMAGE_BASE_GRID

    def install(self) -> None:
        model = self.model
        original = model.pos_embed
        if isinstance(original, DyPEQwenEmbedRope):
            raise RuntimeError(f"{type(model).__name__}.pos_embed is already a DyPE embedding (a copy of a patched model?)")
        if not (QwenEmbedRope is not None and type(original) is QwenEmbedRope):
            raise TypeError(
                f"{type(model).__name__}.pos_embed is {type(original).__name__}; the Qwen-Image adapter supports "
                "QwenEmbedRope only: models built with use_layer3d_rope=True (Qwen-Image-Layered) are not supported; "
                "run them unpatched"
            )
        head_dim = getattr(getattr(model, "config", None), "attention_head_dim", None)
        axes_dims = check_axes_dims(original.axes_dim, head_dim)
        if len(axes_dims) != 3:
            raise ValueError(f"the Qwen-Image adapter expects 3 RoPE axes (frame, rows, cols), got {len(axes_dims)}")
        theta = original.theta
        base_lens = self.axis_base_lens(len(axes_dims))
        per_sample = (lambda: False) if self.backend != "torch" or QwenDoubleStreamAttnProcessor2_0 is None else (
            install_per_sample_processors(self, {QwenDoubleStreamAttnProcessor2_0: QWEN_ROTARY})
        )

        def plan_of_call(shapes: Sequence[tuple[int, int, int]], device: torch.device) -> RopePlan:
            step = self.step
            if step.timestep is None:
                raise self.outside_forward()
            dtype = freq_dtype(device)
            frames, rows, cols = shapes[0]  # the generated image sets the scale
            spans = spans_on((frames, rows, cols), dtype, device)
            # one plan per sample where the batch has several times (a shape test, fixed when compiled), every
            # processor takes per-sample tables and no parallel plan splits them; else one for the call
            ts = step.timestep
            several = isinstance(ts, Tensor) and ts.dim() > 0 and ts.numel() > 1
            unsplit = getattr(model, "_parallel_config", None) is None
            times = diffusion_times if several and unsplit and per_sample() else diffusion_time
            t = times(ts, dtype=dtype, device=device)
            plan = self.plan_step(t, spans, axes_dims, theta, base_lens)
            return native_precision(plan, step.scales, theta, axes_dims)

        swap_module(self, "pos_embed", DyPEQwenEmbedRope(original, plan_of_call))  # pos_embed is in _cp_plan
        self.hook_calls(self.capture("timestep"))
        if self.backend == "triton":
            from .qwen_image_fused import install_fused_attention  # builds on this module

            install_fused_attention(self)
