"""A minimal RGB rasteriser (lines, rectangles, bitmap text) and a PNG encoder on numpy + zlib.

It exists so that `dype-rope demo` and `dype-rope plot` can write a PNG with nothing but the package's own
dependencies (torch, numpy). Lines are stamped as squares of `width` pixels every half pixel of their
length: no anti-aliasing, which keeps every pixel an exact colour and the output byte-for-byte reproducible.
"""

from __future__ import annotations

import struct
import zlib
from typing import Sequence

import numpy as np

from ._font import HEIGHT as GLYPH_H
from ._font import text_mask

Color = tuple[int, int, int]


class Canvas:
    """An RGB image [height, width, 3] (uint8), white, with (x, y) = (column, row) pixel coordinates."""

    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.full((height, width, 3), 255, dtype=np.uint8)

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    def _stamp(self, xs: np.ndarray, ys: np.ndarray, color: Color, width: int, clip) -> None:
        x0, y0, x1, y1 = clip if clip is not None else (0, 0, self.width - 1, self.height - 1)
        lo = -((width - 1) // 2)
        xs, ys = np.round(xs).astype(np.int64), np.round(ys).astype(np.int64)
        for dx in range(lo, lo + width):
            for dy in range(lo, lo + width):
                px, py = xs + dx, ys + dy
                keep = (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
                self.pixels[py[keep], px[keep]] = color

    def polyline(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        color: Color,
        width: int = 1,
        dash: tuple[float, float] | None = None,
        clip: tuple[int, int, int, int] | None = None,
    ) -> None:
        """Draw through the points; `dash` = (on, off) lengths in pixels; `clip` = (x0, y0, x1, y1) inclusive."""
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        finite = np.isfinite(xs) & np.isfinite(ys)
        if xs.size < 2 or not finite.all():
            if not finite.any():
                return
            xs, ys = xs[finite], ys[finite]
        seg = np.hypot(np.diff(xs), np.diff(ys))
        start = np.concatenate([[0.0], np.cumsum(seg)])
        total = start[-1]
        s = np.linspace(0.0, total, max(int(np.ceil(total * 2)) + 1, 2))
        px, py = np.interp(s, start, xs), np.interp(s, start, ys)
        if dash is not None:
            on = np.mod(s, dash[0] + dash[1]) < dash[0]
            px, py = px[on], py[on]
        self._stamp(px, py, color, width, clip)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 1) -> None:
        self.polyline([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color, width)

    def text(
        self, x: float, y: float, text: str, color: Color = (0, 0, 0), size: int = 1, anchor: str = "left",
        vertical: bool = False,
    ) -> None:
        """Write `text` with its vertical middle at y; anchor "left"/"middle"/"right" on x.

        vertical=True turns it 90 degrees counter-clockwise (a y-axis label), centred on (x, y).
        """
        mask = text_mask(text, size)
        if vertical:
            mask = np.rot90(mask)
            top, left = y - mask.shape[0] / 2, x - mask.shape[1] / 2
        else:
            shift = {"left": 0.0, "middle": mask.shape[1] / 2, "right": float(mask.shape[1])}[anchor]
            top, left = y - GLYPH_H * size / 2, x - shift
        rows, cols = np.nonzero(mask)
        self._stamp(cols + round(left), rows + round(top), color, 1, None)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of an RGB uint8 image [H, W, 3]; `text` becomes tEXt chunks (Latin-1 keys and values)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"encode_png takes an RGB uint8 array [H, W, 3], got {pixels.dtype} {pixels.shape}")
    h, w, _ = pixels.shape
    # Filter type 0 (none) on every scanline: a zero byte in front of each row.
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), pixels.reshape(h, w * 3)], axis=1).tobytes()
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))]
    for key, value in (text or {}).items():
        out.append(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace")))
    out += [_chunk(b"IDAT", zlib.compress(raw, 9)), _chunk(b"IEND", b"")]
    return b"".join(out)
