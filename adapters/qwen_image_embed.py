"""Qwen-Image's position layout and its DyPE embedding, apart from the adapter so that the table path
(qwen_image.py) and the fused path (qwen_image_fused.py) both build on them without importing each other.
The layout itself is described in qwen_image.py."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan
from dype_rope.rope_formats import complex_table


def image_list(video_fhw) -> list[tuple[int, int, int]]:
    """img_shapes as QwenEmbedRope reads it: a list holds one entry per sample and only the first sample's
    counts (a (frames, rows, cols) triple, or a list of them: the generated image, then conditioning images);
    returned as a list of triples."""
    if isinstance(video_fhw, list) and video_fhw:
        video_fhw = video_fhw[0]
    if not isinstance(video_fhw, list):
        video_fhw = [video_fhw]
    shapes = [tuple(int(v) for v in fhw) for fhw in video_fhw]
    if not shapes or any(len(s) != 3 for s in shapes):
        raise ValueError(f"img_shapes must hold (frames, rows, cols) triples, got {video_fhw!r}")
    return shapes


def axis_positions(n: int, centred: bool, device=None) -> Tensor:
    """Token positions along one image axis: centred as -(n - n//2) .. n//2 - 1, or 0 .. n - 1."""
    start = -(n - n // 2) if centred else 0
    return torch.arange(start, start + n, dtype=torch.float32, device=device)


def qwen_positions(
    shapes: Sequence[tuple[int, int, int]], text_len: int, centred: bool, device=None, text_after: str = "largest"
) -> tuple[Tensor, Tensor]:
    """Positions [N_img, 3] of every image token (images in order, frame-major) and [text_len, 3] of the text,
    which starts after the largest image's (half-)extent, or after the last image's with text_after="last".

    Whole numbers in float32, built on `device` from Python ints: nothing crosses between host and device.
    """
    blocks = []
    for idx, (f, h, w) in enumerate(shapes):
        frame = torch.arange(idx, idx + f, dtype=torch.float32, device=device)
        rows, cols = axis_positions(h, centred, device), axis_positions(w, centred, device)
        grid = torch.meshgrid(frame, rows, cols, indexing="ij")
        blocks.append(torch.stack(grid, dim=-1).reshape(-1, 3))
    extents = [max(h // 2, w // 2) if centred else max(h, w) for _, h, w in shapes]
    start = extents[-1] if text_after == "last" else max(extents)
    text = torch.arange(start, start + text_len, dtype=torch.float32, device=device)
    return torch.cat(blocks), text.unsqueeze(-1).expand(text_len, 3)


class DyPEQwenEmbedRope(nn.Module):
    """Drop-in for QwenEmbedRope: forward(video_fhw, device, max_txt_seq_len) -> (image, text) complex64
    freqs_cis [N, D/2], rescaled per call."""

    def __init__(
        self, original: nn.Module, plan_of_call: Callable[[Sequence[tuple[int, int, int]], torch.device], RopePlan]
    ) -> None:
        super().__init__()
        self.theta = original.theta
        self.axes_dim = original.axes_dim
        self.scale_rope = original.scale_rope
        self._plan_of_call = plan_of_call

    def forward(self, video_fhw, device: torch.device = None, max_txt_seq_len: int | Tensor | None = None):
        if max_txt_seq_len is None:
            raise ValueError("`max_txt_seq_len` must be provided.")
        shapes = image_list(video_fhw)
        device = torch.device("cpu") if device is None else torch.device(device)
        image, text = qwen_positions(shapes, int(max_txt_seq_len), self.scale_rope, device)
        plan = self._plan_of_call(shapes, device)
        return complex_table(image, plan), complex_table(text, plan)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, axes_dim={list(self.axes_dim)}, scale_rope={self.scale_rope}"
