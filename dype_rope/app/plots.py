"""Figures of the schedules: the effective frequency of every RoPE pair against the diffusion time t.

One panel per method (PI, NTK, YaRN): the Dy- variant solid, the static method dashed, plain RoPE dotted
grey, one line per channel pair coloured from blue (highest frequency) to red (lowest) with a colour bar
for the pairs, frequencies on a log axis; a last panel shows the attention temperature mscale. Drawn with
matplotlib (the `plot` extra), written as PNG or SVG.

    fig = schedule_figure(dim=56, base_len=64, target_len=256)   # FLUX rows axis, 1024 px -> 4096 px
    save_figure(fig, "schedules.png")

matplotlib is imported only when a figure is drawn: schedule_curves (the data) needs numpy and torch alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from dype_rope import __version__
from dype_rope.config import DyPEConfig
from dype_rope.schedules import get_schedule

from .files import write_atomically

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg")
PLAIN_GREY = "#969696"
# Pair colours run from blue (highest frequency, j = 0) to red (lowest), through cyan, green and orange.
PAIR_RAMP = ("#1f77b4", "#17becf", "#2ca02c", "#ff7f0e", "#d62728")
METHOD_COLORS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b")  # mscale panel, one per method
NAMES = {"pi": "PI", "ntk": "NTK", "yarn": "YaRN"}
STYLES = {"dynamic": "-", "static": "--", "plain": ":"}
T_LABEL = "diffusion time t  (1 = noise, 0 = data)"


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


def pair_colormap():
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("dype_pairs", PAIR_RAMP)


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
) -> "Figure":
    """Effective frequency of every pair of one axis against t for each method (Dy- solid, static dashed,
    plain RoPE dotted), and the attention temperature mscale in the last panel.

    The pairs of one method and variant are one LineCollection, segment j = pair j, coloured by j through the
    colour bar's map; every data artist carries a gid naming what it shows ("pi/dynamic": Dy-PI's pairs,
    "mscale/yarn/static"), which the SVG keeps as the id of its group."""
    if isinstance(num_t, bool) or not isinstance(num_t, int) or num_t < 2:
        raise ValueError(f"num_t must be a whole number >= 2 (samples of t in [0, 1]), got {num_t!r}")
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    ts = np.linspace(0.0, 1.0, num_t)
    n = dim // 2
    plain_freq, _ = schedule_curves(DyPEConfig(method="none"), dim, theta, base_len, target_len, ts)
    cmap, norm = pair_colormap(), Normalize(0, max(n - 1, 1))

    def pairs(freq: np.ndarray, variant: str, lw: float, gid: str) -> LineCollection:
        """One line per pair (freq [T, n]) as one artist: one draw call, not n."""
        segments = np.stack([np.broadcast_to(ts, (n, num_t)), freq.T], axis=-1)
        lines = LineCollection(segments, linestyles=STYLES[variant], linewidths=lw, gid=gid)
        if variant == "plain":
            lines.set_color(PLAIN_GREY)
        else:
            lines.set(array=np.arange(n), cmap=cmap, norm=norm)
        return lines

    rows = math.ceil((len(methods) + 1) / 2)
    height = 4.5 * rows  # inches; margins below are fixed in inches so that the text fits at any row count
    # A fixed layout: matplotlib's constrained layout would find the same one but doubles the demo's drawing time.
    top, bottom, gap = 0.75 / height, 0.8 / height, 0.85
    fig = Figure(figsize=(12, height), dpi=100, facecolor="white")
    axes = list(
        fig.subplots(
            rows, 2, squeeze=False,
            gridspec_kw=dict(left=0.065, right=0.9, top=1 - top, bottom=bottom, wspace=0.2,
                             hspace=gap / ((height - 0.75 - 0.8 - gap * (rows - 1)) / rows)),
        ).ravel()
    )
    for ax in axes[len(methods) + 1 :]:
        ax.remove()
    temperature = axes[len(methods)]
    temperature.plot(ts, np.ones_like(ts), STYLES["plain"], color=PLAIN_GREY, gid="mscale/plain", label="plain RoPE")
    for k, (ax, method) in enumerate(zip(axes, methods)):
        name = NAMES.get(method, method)
        dy = DyPEConfig(method, True, lambda_s, lambda_t, yarn_modulation)
        static = DyPEConfig(method, False, lambda_s, lambda_t, yarn_modulation)
        dy_freq, dy_ms = schedule_curves(dy, dim, theta, base_len, target_len, ts)
        st_freq, st_ms = schedule_curves(static, dim, theta, base_len, target_len, ts)
        ax.set_yscale("log")
        ax.add_collection(pairs(plain_freq, "plain", 0.8, f"{method}/plain"))
        ax.add_collection(pairs(st_freq, "static", 0.9, f"{method}/static"))
        dy_lines = ax.add_collection(pairs(dy_freq, "dynamic", 1.6, f"{method}/dynamic"))  # drawn last: on top
        ax.autoscale_view()
        ax.yaxis.set_minor_locator(NullLocator())  # decades are enough to read it; minor ticks cost the most time
        ax.set_title(f"Dy-{name} against static {name}   (κ(t) = {dy.lambda_s:g} · {_power('t', dy.lambda_t)})")
        ax.set_xlabel(T_LABEL)
        ax.set_ylabel("frequency of the pair (rad per token)")
        ax.set_xlim(0, 1)
        ax.grid(True, which="major", alpha=0.3)
        color = METHOD_COLORS[k % len(METHOD_COLORS)]
        temperature.plot(ts, st_ms, STYLES["static"], color=color, lw=1.2, gid=f"mscale/{method}/static", label=f"{name} (static)")
        temperature.plot(ts, dy_ms, STYLES["dynamic"], color=color, lw=1.8, gid=f"mscale/{method}/dynamic", label=f"Dy-{name}")
    temperature.set_title("attention temperature mscale")
    temperature.set_xlabel(T_LABEL)
    temperature.set_ylabel("mscale (multiplies the attention logits' scale)")
    temperature.set_xlim(0, 1)
    temperature.grid(True, alpha=0.3)
    temperature.legend(fontsize="small", ncols=2)
    bar = fig.colorbar(dy_lines, cax=fig.add_axes((0.915, bottom, 0.015, 1 - top - bottom)))
    bar.set_label("channel pair j  (0 = highest frequency)")
    # One legend of the line styles for every frequency panel, below them: inside a panel it would hide curves.
    fig.legend(
        handles=[
            Line2D([], [], ls=STYLES["dynamic"], color="black", lw=1.6, label="Dy- variant (DyPE)"),
            Line2D([], [], ls=STYLES["static"], color="black", lw=0.9, label="static method"),
            Line2D([], [], ls=STYLES["plain"], color=PLAIN_GREY, label="plain RoPE"),
        ],
        loc="lower center", bbox_to_anchor=(0.5, 0.0), ncols=3, frameon=False,
    )
    fig.suptitle(
        f"DyPE schedules of one RoPE axis: {dim} channels, theta {theta:g}, {base_len:g} -> {target_len:g} tokens "
        f"(size ratio s = {target_len / base_len:.3g})",
        fontsize="large", y=1 - 0.15 / height, va="top",
    )
    return fig


_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def _power(base: str, exponent: float) -> str:
    """"t²" for whole exponents, "t^1.5" otherwise: plain text, no mathtext parser to start."""
    text = f"{exponent:g}"
    return base + text.translate(_SUPERSCRIPTS) if float(exponent).is_integer() else f"{base}^{text}"


def save_figure(fig: "Figure", path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `fig` as PNG or SVG, chosen by the file's suffix; returns the path. `metadata` goes into the
    PNG's text chunks (an SVG keeps only its creator)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot write {path.name!r}: the figure format must be one of {FORMATS}")
    software = f"dype_rope {__version__}"
    if suffix == ".svg":
        import matplotlib

        # Text stays text (searchable, smaller); a fixed salt keeps the ids stable; no date in the file.
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "dype_rope"}):
            return write_atomically(path, lambda tmp: fig.savefig(
                tmp, format="svg", metadata={"Creator": software, "Date": None}, facecolor="white"))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    info = PngInfo()
    for key, value in {"Software": software, **(metadata or {})}.items():
        info.add_text(key, value)
    # Flat lines on white need few colours: a 256-colour palette looks the same at a quarter of the bytes.
    palette = rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return write_atomically(path, lambda tmp: palette.save(tmp, format="PNG", pnginfo=info))
