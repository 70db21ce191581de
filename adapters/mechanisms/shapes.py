"""The Qwen-style shapes mechanism: a RoPE module called as forward(img_shapes, device, max_txt_seq_len) that returns
(image, text) complex freqs_cis [N, D/2] for images laid out on (frame, row, column) grids, centred on zero where
the module's `scale_rope` is set, and text tokens on the diagonal after the image's half-extent (Qwen-Image's
QwenEmbedRope and its copies, e.g. NucleusMoE-Image).

As the ids mechanism does, the replacement calls the stock module and keeps its number on every pair whose axis
is not stretched in this call (torch.where on the device): at or below the base grid the tables are the stock
ones bit for bit. Stretched pairs take DyPE's frequencies (float64 where the device has it) at the positions the
module uses, rebuilt from the same Python ints. The scale comes from the first image of img_shapes (the generated
one); conditioning images after it keep their positions and never set it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims, freq_dtype
from dype_rope.rope_formats import complex_table
from dype_rope.timestep import diffusion_time

from ..base import spans_on
from ..parallel import carry_parallel_hooks
from ..qwen_image_embed import image_list, qwen_positions


@dataclass(frozen=True)
class QwenShapes:
    """The layout of a Qwen-style shapes module, declared by a family row.

    text_after: which image's half-extent the text positions start after: "last" (the last image of img_shapes,
                as NucleusMoEEmbedRope computes it) or "largest" (the largest of them, as QwenEmbedRope does).
    """

    text_after: str = "largest"

    def __post_init__(self) -> None:
        if self.text_after not in ("last", "largest"):
            raise ValueError(f"text_after is 'last' or 'largest', got {self.text_after!r}")

    def install(self, adapter) -> None:
        install_shapes(self, adapter)

    def describe(self) -> str:
        return "shapes, complex (Qwen-style grid)"


def shape_positions(shapes, text_len: int, centred: bool, text_after: str, device) -> tuple[Tensor, Tensor]:
    """float32 positions [N_img, 3] of every image token and [text_len, 3] of the text: Qwen-Image's layout
    (qwen_positions), the text after the image the row names."""
    return qwen_positions(shapes, text_len, centred, device, text_after)


class DyPEShapesEncoding(nn.Module):
    """Drop-in for a Qwen-style shapes module: the stock (image, text) tables, DyPE's on stretched pairs."""

    def __init__(self, original: nn.Module, spec: QwenShapes, plan_of_call, plain: bool = False) -> None:
        super().__init__()
        self.theta, self.axes_dim, self.scale_rope = original.theta, original.axes_dim, original.scale_rope
        object.__setattr__(self, "original", original)  # not a submodule: the module tree stays as it was
        self._spec, self._plan_of_call = spec, plan_of_call
        self._plain = plain  # method="none": plain RoPE is the stock table itself, in the stock precision

    def forward(self, video_fhw, device: torch.device = None, max_txt_seq_len: int | Tensor | None = None):
        stock = self.original(video_fhw, device=device, max_txt_seq_len=max_txt_seq_len)
        if self._plain:
            return stock
        shapes = image_list(video_fhw)
        device = stock[0].device
        centred, after = bool(self.scale_rope), self._spec.text_after
        image, text = shape_positions(shapes, int(max_txt_seq_len), centred, after, device)
        plan, scales = self._plan_of_call(shapes, device)
        stretched = scales.index_select(-1, plan.pair_axis) > 1  # [D/2]
        return tuple(
            torch.where(stretched, complex_table(pos, plan).to(s.dtype), s) for pos, s in zip((image, text), stock)
        )

    def extra_repr(self) -> str:
        return f"theta={self.theta}, axes_dim={list(self.axes_dim)}, scale_rope={self.scale_rope}"


def install_shapes(spec: QwenShapes, adapter) -> None:
    family, model = adapter.family, adapter.model
    original = getattr(model, family.module, None)
    owner = f"{type(model).__name__}.{family.module}"
    if isinstance(original, DyPEShapesEncoding):
        raise RuntimeError(f"{owner} is already a DyPE embedding (a copy of a patched model?)")
    if not all(hasattr(original, a) for a in ("theta", "axes_dim", "scale_rope")):
        raise TypeError(
            f"{owner} ({type(original).__name__}) is not a Qwen-style shapes module (theta, axes_dim, scale_rope)"
        )
    axes_dims = check_axes_dims(original.axes_dim)
    if len(axes_dims) != 3:
        raise ValueError(f"{owner} has {len(axes_dims)} RoPE axes; a shapes module has (frame, rows, columns)")
    theta = float(original.theta)
    probe(spec, original, axes_dims, theta)
    base_lens = adapter.axis_base_lens(3)
    time = family.time

    def plan_of_call(shapes: Sequence[tuple[int, int, int]], device: torch.device) -> tuple[RopePlan, Tensor]:
        step = adapter.step
        if step.timestep is None:
            raise adapter.outside_forward()
        if step.plan is None:
            dtype = freq_dtype(device)
            spans = spans_on(shapes[0], dtype, device)  # the generated image sets the scale
            t = diffusion_time(
                step.timestep, divide_by=time.divide_by, reverse=time.reverse, dtype=dtype, device=device
            )
            adapter.plan_step(t, spans, axes_dims, theta, base_lens)
        return step.plan, step.scales

    replacement = DyPEShapesEncoding(original, spec, plan_of_call, plain=adapter.cfg.method == "none")
    carry_parallel_hooks(original, replacement)
    setattr(model, family.module, replacement)
    adapter.on_remove(lambda: setattr(model, family.module, original))
    adapter.on_remove(lambda: carry_parallel_hooks(replacement, original))
    adapter.hook_calls(adapter.capture(time.argument))


def probe(spec: QwenShapes, module: nn.Module, axes_dims: Sequence[int], theta: float) -> None:
    """Call the stock module on a small image and a reference image; its tables must be plain RoPE at the
    positions this mechanism rebuilds (same layout, theta and axes), or the row does not describe it."""
    from dype_rope.rope import plain_plan

    shapes, text = [(1, 3, 4), (1, 2, 2)], 3  # the two images' half-extents differ: "last" and "largest" too
    try:
        with torch.no_grad():
            out = module([shapes], device=torch.device("cpu"), max_txt_seq_len=text)
    except Exception as err:
        raise TypeError(
            f"{type(module).__name__} cannot be called as a shapes module (img_shapes, device, max_txt_seq_len): {err}"
        ) from err
    plan = plain_plan(axes_dims, theta)
    positions = shape_positions(shapes, text, bool(module.scale_rope), spec.text_after, torch.device("cpu"))
    for got, pos in zip(out, positions):
        want = complex_table(pos, plan)
        if got.shape != want.shape or not (got.to(want.dtype) - want).abs().max() <= 1e-5:
            raise TypeError(
                f"{type(module).__name__} (theta={theta}, axes_dim={list(axes_dims)}, scale_rope={module.scale_rope}) "
                f"does not return the Qwen-style layout its row declares (text after the {spec.text_after} image)"
            )
