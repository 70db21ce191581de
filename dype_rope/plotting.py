"""Figures of the schedules: the effective frequency of every RoPE pair against the diffusion time t.

One panel per method (PI, NTK, YaRN): the Dy- variant as solid lines (one per channel pair, coloured from
the highest frequency to the lowest), the static method dashed, plain RoPE dotted grey; a last panel shows
the attention temperature mscale. Written as SVG (text) or PNG (numpy + zlib), no plotting library needed.

    fig = schedule_figure(dim=56, base_len=64, target_len=256)   # FLUX rows axis, 1024 px -> 4096 px
    save_figure(fig, "schedules.png")
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np
import torch

from ._raster import Canvas, encode_png
from .config import DyPEConfig
from .schedules import get_schedule

FORMATS = (".png", ".svg")
PLAIN_GREY = (150, 150, 150)
_DASHES = {"solid": None, "dashed": (8.0, 5.0), "dotted": (2.0, 4.0)}
# Pair colours run from blue (highest frequency, j = 0) to red (lowest).
_RAMP = np.array([(31, 119, 180), (23, 190, 207), (44, 160, 44), (255, 127, 14), (214, 39, 40)], dtype=np.float64)


@dataclass
class Series:
    x: np.ndarray
    y: np.ndarray
    color: tuple[int, int, int]
    dash: str = "solid"
    width: int = 1


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    log_y: bool = False
    note: str = ""

    def limits(self) -> tuple[float, float, float, float]:
        xs = np.concatenate([s.x for s in self.series])
        ys = np.concatenate([self._y(s.y) for s in self.series])
        y0, y1 = float(ys.min()), float(ys.max())
        if self.log_y:
            y0, y1 = math.floor(y0), math.ceil(y1)
        pad = 0.05 * (y1 - y0) if y1 > y0 else 0.5
        return float(xs.min()), float(xs.max()), y0 - pad, y1 + pad

    def _y(self, y: np.ndarray) -> np.ndarray:
        return np.log10(y) if self.log_y else np.asarray(y, dtype=np.float64)

    def ticks(self) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
        x0, x1, y0, y1 = self.limits()
        xt = [(v, f"{v:g}") for v in np.linspace(x0, x1, 5)]
        if self.log_y:
            step = max(1, math.ceil((y1 - y0) / 6))
            yt = [(float(e), f"1e{e:d}") for e in range(math.ceil(y0), math.floor(y1) + 1, step)]
        else:
            yt = [(float(v), f"{v:.3g}") for v in np.linspace(y0, y1, 5)]
        return xt, yt


@dataclass
class Figure:
    panels: list[Panel]
    title: str = ""
    cols: int = 2
    width: int = 1200
    height: int = 900

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Plot area (x0, y0, x1, y1) of every panel, in pixels."""
        rows = math.ceil(len(self.panels) / self.cols)
        top = 40 if self.title else 10
        cell_w, cell_h = self.width / self.cols, (self.height - top) / rows
        out = []
        for i in range(len(self.panels)):
            r, c = divmod(i, self.cols)
            x0, y0 = c * cell_w, top + r * cell_h
            out.append((round(x0 + 80), round(y0 + 55), round(x0 + cell_w - 20), round(y0 + cell_h - 50)))
        return out


def to_pixels(panel: Panel, box: tuple[int, int, int, int], x, y) -> tuple[np.ndarray, np.ndarray]:
    """Data coordinates of `panel` -> pixel coordinates in its plot area `box` (y grows downwards)."""
    x0, x1, y0, y1 = panel.limits()
    bx0, by0, bx1, by1 = box
    px = bx0 + (np.asarray(x, dtype=np.float64) - x0) / (x1 - x0) * (bx1 - bx0)
    py = by1 - (panel._y(np.asarray(y, dtype=np.float64)) - y0) / (y1 - y0) * (by1 - by0)
    return px, py


def pair_color(j: int, n: int) -> tuple[int, int, int]:
    pos = j / max(n - 1, 1) * (len(_RAMP) - 1)
    lo = min(int(pos), len(_RAMP) - 2)
    rgb = _RAMP[lo] + (pos - lo) * (_RAMP[lo + 1] - _RAMP[lo])
    return tuple(int(round(v)) for v in rgb)


# -- the schedules' data ------------------------------------------------------------------------------------
def schedule_curves(
    cfg: DyPEConfig, dim: int, theta: float, base_len: float, target_len: float, ts: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """inv_freq [T, dim/2] and mscale [T] of one axis (`base_len` tokens at training, `target_len` now) at
    every t in `ts`, computed in float64 by the registered schedule `cfg.method`."""
    if dim <= 0 or dim % 2:
        raise ValueError(f"dim must be a positive even number of channels, got {dim}")
    if base_len <= 0 or target_len <= 0:
        raise ValueError(f"base and target sizes must be positive, got {base_len} and {target_len}")
    t = torch.as_tensor(np.asarray(ts, dtype=np.float64))
    scale = torch.tensor(float(target_len) / float(base_len), dtype=torch.float64)
    inv_freq, mscale = get_schedule(cfg.method)(dim, float(theta), float(base_len), scale, t, cfg)
    return inv_freq.expand(len(t), dim // 2).numpy(), mscale.expand(len(t)).numpy()


_TITLES = {"pi": "PI", "ntk": "NTK", "yarn": "YaRN"}


def schedule_figure(
    dim: int = 56,
    theta: float = 10000.0,
    base_len: float = 64,
    target_len: float = 256,
    methods: Sequence[str] = ("pi", "ntk", "yarn"),
    lambda_s: float | None = None,
    lambda_t: float | None = None,
    yarn_modulation: str = "multiply",
    num_t: int = 101,
) -> Figure:
    """Effective frequency of every pair of one axis against t for each method (Dy- solid, static dashed,
    plain RoPE dotted), and the attention temperature mscale in the last panel."""
    if isinstance(num_t, bool) or not isinstance(num_t, int) or num_t < 2:
        raise ValueError(f"num_t must be a whole number >= 2 (samples of t in [0, 1]), got {num_t!r}")
    ts = np.linspace(0.0, 1.0, num_t)
    n = dim // 2
    xlabel = "t (1 = noise, 0 = data)"
    plain_freq, _ = schedule_curves(DyPEConfig(method="none"), dim, theta, base_len, target_len, ts)
    panels, temperature = [], Panel("attention temperature mscale", xlabel, "mscale")
    temperature.series.append(Series(ts, np.ones_like(ts), PLAIN_GREY, "dotted"))
    for k, method in enumerate(methods):
        name = _TITLES.get(method, method)
        dy = DyPEConfig(method, True, lambda_s, lambda_t, yarn_modulation)
        static = DyPEConfig(method, False, lambda_s, lambda_t, yarn_modulation)
        dy_freq, dy_ms = schedule_curves(dy, dim, theta, base_len, target_len, ts)
        st_freq, st_ms = schedule_curves(static, dim, theta, base_len, target_len, ts)
        panel = Panel(
            f"Dy-{name} vs {name}", xlabel, "inverse frequency (rad / token)", log_y=True,
            note=f"kappa(t) = {dy.lambda_s:g} t^{dy.lambda_t:g}; pair j = 0 blue ... j = {n - 1} red",
        )
        for j in range(n):
            panel.series.append(Series(ts, plain_freq[:, j], PLAIN_GREY, "dotted"))
        for j in range(n):
            panel.series.append(Series(ts, st_freq[:, j], pair_color(j, n), "dashed"))
        for j in range(n):
            panel.series.append(Series(ts, dy_freq[:, j], pair_color(j, n), "solid", 2))
        panels.append(panel)
        method_color = pair_color(k, len(methods))
        temperature.series.append(Series(ts, st_ms, method_color, "dashed"))
        temperature.series.append(Series(ts, dy_ms, method_color, "solid", 2))
    names = ", ".join(_TITLES.get(m, m) for m in methods)
    temperature.note = f"{names} (colours in that order); dashed: static"
    title = (
        f"DyPE schedules: axis of {dim} channels, theta {theta:g}, {base_len:g} -> {target_len:g} tokens "
        f"(s = {target_len / base_len:.3g}); solid Dy-, dashed static, dotted plain RoPE"
    )
    return Figure(panels + [temperature], title=title)


# -- writers ------------------------------------------------------------------------------------------------
def render_png(fig: Figure) -> np.ndarray:
    """The figure as an RGB uint8 image [height, width, 3]."""
    canvas = Canvas(fig.width, fig.height)
    if fig.title:
        canvas.text(fig.width / 2, 20, fig.title, size=2 if len(fig.title) * 12 < fig.width else 1, anchor="middle")
    for panel, box in zip(fig.panels, fig.boxes()):
        bx0, by0, bx1, by1 = box
        xt, yt = panel.ticks()
        for v, label in xt:
            px, _ = to_pixels(panel, box, [v], [1.0 if panel.log_y else 0.0])
            canvas.polyline([px[0], px[0]], [by0, by1], (235, 235, 235))
            canvas.text(px[0], by1 + 12, label, anchor="middle")
        for v, label in yt:
            _, py = to_pixels(panel, box, [0.0], [10.0**v if panel.log_y else v])
            canvas.polyline([bx0, bx1], [py[0], py[0]], (235, 235, 235))
            canvas.text(bx0 - 6, py[0], label, anchor="right")
        for s in panel.series:
            px, py = to_pixels(panel, box, s.x, s.y)
            canvas.polyline(px, py, s.color, s.width, _DASHES[s.dash], clip=box)
        canvas.rect(bx0, by0, bx1, by1, (0, 0, 0))
        canvas.text((bx0 + bx1) / 2, by0 - 32, panel.title, size=2, anchor="middle")
        if panel.note:
            canvas.text((bx0 + bx1) / 2, by0 - 12, panel.note, anchor="middle")
        canvas.text((bx0 + bx1) / 2, by1 + 30, panel.xlabel, anchor="middle")
        canvas.text(bx0 - 62, (by0 + by1) / 2, panel.ylabel, vertical=True)
    return canvas.pixels


def render_svg(fig: Figure) -> str:
    """The figure as an SVG document."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{fig.width}" height="{fig.height}" '
        f'viewBox="0 0 {fig.width} {fig.height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{fig.width}" height="{fig.height}" fill="white"/>',
    ]
    if fig.title:
        out.append(f'<text x="{fig.width / 2:g}" y="24" text-anchor="middle" font-size="15">{escape(fig.title)}</text>')
    for i, (panel, box) in enumerate(zip(fig.panels, fig.boxes())):
        bx0, by0, bx1, by1 = box
        out.append(f'<clipPath id="p{i}"><rect x="{bx0}" y="{by0}" width="{bx1 - bx0}" height="{by1 - by0}"/></clipPath>')
        xt, yt = panel.ticks()
        for v, label in xt:
            px, _ = to_pixels(panel, box, [v], [1.0 if panel.log_y else 0.0])
            out.append(f'<line x1="{px[0]:.2f}" y1="{by0}" x2="{px[0]:.2f}" y2="{by1}" stroke="#ebebeb"/>')
            out.append(f'<text x="{px[0]:.2f}" y="{by1 + 16}" text-anchor="middle">{escape(label)}</text>')
        for v, label in yt:
            _, py = to_pixels(panel, box, [0.0], [10.0**v if panel.log_y else v])
            out.append(f'<line x1="{bx0}" y1="{py[0]:.2f}" x2="{bx1}" y2="{py[0]:.2f}" stroke="#ebebeb"/>')
            out.append(f'<text x="{bx0 - 6}" y="{py[0] + 4:.2f}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<g clip-path="url(#p{i})" fill="none">')
        for s in panel.series:
            px, py = to_pixels(panel, box, s.x, s.y)
            points = " ".join(f"{a:.2f},{b:.2f}" for a, b in zip(px, py))
            dash = _DASHES[s.dash]
            dash_attr = f' stroke-dasharray="{dash[0]:g} {dash[1]:g}"' if dash else ""
            color = "#%02x%02x%02x" % s.color
            out.append(f'<polyline points="{points}" stroke="{color}" stroke-width="{s.width}"{dash_attr}/>')
        out.append("</g>")
        out.append(f'<rect x="{bx0}" y="{by0}" width="{bx1 - bx0}" height="{by1 - by0}" fill="none" stroke="black"/>')
        cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
        out.append(f'<text x="{cx:g}" y="{by0 - 26}" text-anchor="middle" font-size="15">{escape(panel.title)}</text>')
        if panel.note:
            out.append(f'<text x="{cx:g}" y="{by0 - 8}" text-anchor="middle">{escape(panel.note)}</text>')
        out.append(f'<text x="{cx:g}" y="{by1 + 34}" text-anchor="middle">{escape(panel.xlabel)}</text>')
        out.append(
            f'<text x="{bx0 - 62}" y="{cy:g}" text-anchor="middle" transform="rotate(-90 {bx0 - 62} {cy:g})">'
            f"{escape(panel.ylabel)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def save_figure(fig: Figure, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `fig` as PNG or SVG, chosen by the file's suffix; returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot write {path.name!r}: the figure format must be one of {FORMATS}")
    if suffix == ".svg":
        path.write_text(render_svg(fig), encoding="utf-8")
    else:
        path.write_bytes(encode_png(render_png(fig), {"Software": "dype_rope", **(metadata or {})}))
    return path
