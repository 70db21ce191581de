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


def pair_color(j: int, n: int) -> tuple[float, float, float, float]:
    """RGBA of channel pair j of n on the pair colour bar."""
    return tuple(float(v) for v in pair_colormap()(j / max(n - 1, 1)))


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

    Every line carries a gid naming what it shows ("pi/dynamic/3": Dy-PI, pair 3; "mscale/yarn/static"),
    which the SVG keeps as the id of its group."""
    if isinstance(num_t, bool) or not isinstance(num_t, int) or num_t < 2:
        raise ValueError(f"num_t must be a whole number >= 2 (samples of t in [0, 1]), got {num_t!r}")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    ts = np.linspace(0.0, 1.0, num_t)
    n = dim // 2
    plain_freq, _ = schedule_curves(DyPEConfig(method="none"), dim, theta, base_len, target_len, ts)
    cmap = pair_colormap()
    rows = math.ceil((len(methods) + 1) / 2)
    fig = Figure(figsize=(12, 4.5 * rows), layout="constrained")
    axes = list(fig.subplots(rows, 2, squeeze=False).ravel())
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
        for j in range(n):
            ax.plot(ts, plain_freq[:, j], STYLES["plain"], color=PLAIN_GREY, lw=0.8, gid=f"{method}/plain/{j}")
        for j in range(n):
            ax.plot(ts, st_freq[:, j], STYLES["static"], color=cmap(j / max(n - 1, 1)), lw=0.9, gid=f"{method}/static/{j}")
        for j in range(n):
            ax.plot(ts, dy_freq[:, j], STYLES["dynamic"], color=cmap(j / max(n - 1, 1)), lw=1.6, gid=f"{method}/dynamic/{j}")
        ax.set_yscale("log")
        ax.set_title(f"Dy-{name} against static {name}   ($\\kappa(t) = {dy.lambda_s:g}\\,t^{{{dy.lambda_t:g}}}$)")
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
    bar = fig.colorbar(
        ScalarMappable(Normalize(0, n - 1), cmap), ax=axes[: len(methods)], location="right", shrink=0.9, pad=0.01
    )
    bar.set_label(f"channel pair j  (0 = highest frequency, {n - 1} = lowest)")
    # One legend of the line styles for every frequency panel, below them: inside a panel it would hide curves.
    fig.legend(
        handles=[
            Line2D([], [], ls=STYLES["dynamic"], color="black", lw=1.6, label="Dy- variant (DyPE)"),
            Line2D([], [], ls=STYLES["static"], color="black", lw=0.9, label="static method"),
            Line2D([], [], ls=STYLES["plain"], color=PLAIN_GREY, label="plain RoPE"),
        ],
        loc="outside lower center", ncols=3, frameon=False,
    )
    fig.suptitle(
        f"DyPE schedules of one RoPE axis: {dim} channels, theta {theta:g}, {base_len:g} -> {target_len:g} tokens "
        f"(size ratio s = {target_len / base_len:.3g})",
        fontsize="large",
    )
    return fig


def save_figure(fig: "Figure", path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `fig` as PNG or SVG, chosen by the file's suffix; returns the path. `metadata` goes into the
    PNG's text chunks (an SVG keeps only its creator)."""
    import matplotlib

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot write {path.name!r}: the figure format must be one of {FORMATS}")
    software = f"dype_rope {__version__}"
    if suffix == ".svg":
        meta = {"Creator": software, "Date": None}  # no date: the same figure gives the same file
    else:
        meta = {"Software": software, **(metadata or {})}
    # Text stays text in the SVG (searchable, smaller); a fixed salt keeps its ids stable between runs.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "dype_rope"}):
        fig.savefig(path, format=suffix[1:], dpi=100, metadata=meta, facecolor="white")
    return path
