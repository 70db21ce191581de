"""Schedule figures: the plotted data against closed forms written from the methods' definitions, the
figure's axes, colour bar and labels, the PNG's pixels where the data says, the SVG read back as XML."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from dype_rope import DyPEConfig
from dype_rope.app.plots import save_figure, schedule_curves, schedule_figure

TS = np.linspace(0.0, 1.0, 11)


def _plain(dim, theta):
    return 1.0 / theta ** (np.arange(0, dim, 2) / dim)  # as diffusers writes it


def _yarn_reference(dim, theta, base_len, s, rot):
    """The issue's YaRN formulas, written out in numpy: rot = (beta0, beta1, gamma0, gamma1)."""
    half = dim // 2
    j = np.arange(half)
    plain = _plain(dim, theta)
    pi_f = plain / s
    ntk_f = _plain(dim, theta * s ** (dim / (dim - 2)))

    def ramp(a, b):
        c = lambda rho: dim * math.log(base_len / (2 * math.pi * rho)) / (2 * math.log(theta))  # noqa: E731
        low = min(max(math.floor(c(a)), 0), half)
        high = min(max(math.ceil(c(b)), 0), half)
        high = high + 0.001 if low == high else high
        return np.clip((j - low) / (high - low), 0, 1)

    rb, rg = ramp(rot[0], rot[1]), ramp(rot[2], rot[3])
    f = pi_f * rb + ntk_f * (1 - rb)
    return f * rg + plain * (1 - rg)


@pytest.mark.parametrize("dim,theta,base,target", [(56, 10000.0, 64, 256), (14, 10000.0, 8, 32), (16, 500.0, 32, 48)])
def test_curves_follow_the_closed_forms(dim, theta, base, target):
    s = target / base
    plain = _plain(dim, theta)
    k = 2.0 * TS**2  # PI / NTK defaults lambda_s = lambda_t = 2

    inv, ms = schedule_curves(DyPEConfig("pi", True), dim, theta, base, target, TS)
    np.testing.assert_allclose(inv, plain / np.maximum(1, s**k)[:, None], rtol=1e-12)
    np.testing.assert_array_equal(ms, 1.0)
    inv, _ = schedule_curves(DyPEConfig("pi", False), dim, theta, base, target, TS)
    np.testing.assert_allclose(inv, np.broadcast_to(plain / s, inv.shape), rtol=1e-12)

    inv, _ = schedule_curves(DyPEConfig("ntk", True), dim, theta, base, target, TS)
    theta_t = theta * np.maximum(1, s ** (dim / (dim - 2) * k))
    np.testing.assert_allclose(inv, theta_t[:, None] ** (-np.arange(0, dim, 2) / dim), rtol=1e-12)

    inv, ms = schedule_curves(DyPEConfig("yarn", False), dim, theta, base, target, TS)
    np.testing.assert_allclose(inv, np.broadcast_to(_yarn_reference(dim, theta, base, s, (1.25, 0.75, 16, 2)), inv.shape), rtol=1e-12)
    np.testing.assert_allclose(ms, 0.1 * math.log(s) + 1, rtol=1e-15)

    inv, ms = schedule_curves(DyPEConfig("yarn", True), dim, theta, base, target, TS)
    for i, t in enumerate(TS[1:], start=1):  # Dy-YaRN: thresholds times kappa = t**2
        rot = tuple(r * t**2 for r in (1.25, 0.75, 16, 2))
        np.testing.assert_allclose(inv[i], _yarn_reference(dim, theta, base, s, rot), rtol=1e-12)
    np.testing.assert_array_equal(inv[0], plain)  # t = 0: plain RoPE exactly
    np.testing.assert_allclose(ms, 0.1 * math.log(s) + 1, rtol=1e-15)


def test_figure_rejects_a_single_t():
    with pytest.raises(ValueError, match="num_t"):
        schedule_figure(num_t=1)


def test_curves_reject_bad_axes():
    with pytest.raises(ValueError, match="even"):
        schedule_curves(DyPEConfig(), 7, 10000.0, 8, 32, TS)
    with pytest.raises(ValueError, match="positive"):
        schedule_curves(DyPEConfig(), 8, 10000.0, 0, 32, TS)


def _artists(fig) -> dict:
    """Every data artist of the figure by its gid: "pi/dynamic" (Dy-PI's pairs, one LineCollection),
    "mscale/yarn/static" (a line), ..."""
    return {a.get_gid(): a for ax in fig.axes for a in [*ax.get_lines(), *ax.collections] if a.get_gid()}


def _pair(collection, j: int) -> tuple[np.ndarray, np.ndarray]:
    segment = collection.get_segments()[j]
    return segment[:, 0], segment[:, 1]


def _pair_rgb(collection, j: int) -> np.ndarray:
    collection.update_scalarmappable()
    return np.asarray(collection.get_edgecolor()[j][:3])


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255


def test_figure_lines_are_the_closed_forms():
    dim, theta, base, target = 8, 10000.0, 4, 16
    s, n = target / base, dim // 2
    ts = np.linspace(0, 1, 21)
    k = 2.0 * ts**2  # PI / NTK defaults lambda_s = lambda_t = 2
    fig = schedule_figure(dim=dim, base_len=base, target_len=target, num_t=21)
    art = _artists(fig)
    plain = _plain(dim, theta)
    expected = {
        "pi/static": np.broadcast_to(plain / s, (21, n)),
        "pi/dynamic": plain / np.maximum(1, s**k)[:, None],
        "ntk/static": np.broadcast_to(_plain(dim, theta * s ** (dim / (dim - 2))), (21, n)),
        "ntk/dynamic": (theta * np.maximum(1, s ** (dim / (dim - 2) * k)))[:, None] ** (-np.arange(0, dim, 2) / dim),
        "yarn/static": np.broadcast_to(_yarn_reference(dim, theta, base, s, (1.25, 0.75, 16, 2)), (21, n)),
        "yarn/dynamic": np.array(
            # Dy-YaRN: thresholds times kappa = t**2; at t = 0 plain RoPE exactly
            [plain] + [_yarn_reference(dim, theta, base, s, tuple(r * t**2 for r in (1.25, 0.75, 16, 2))) for t in ts[1:]]
        ),
    }
    for method in ("pi", "ntk", "yarn"):
        for variant in ("plain", "static", "dynamic"):
            lines = art[f"{method}/{variant}"]
            assert len(lines.get_segments()) == n
            _, dashes = lines.get_linestyle()[0]  # solid: no dashes; dashed: long on, short off; dotted: the reverse
            assert {"dynamic": dashes is None, "static": dashes is not None and dashes[0] > dashes[1],
                    "plain": dashes is not None and dashes[0] < dashes[1]}[variant], (variant, dashes)
            for j in range(n):
                x, y = _pair(lines, j)
                np.testing.assert_array_equal(x, ts)
                reference = plain[j] if variant == "plain" else expected[f"{method}/{variant}"][:, j]
                np.testing.assert_allclose(y, np.broadcast_to(reference, y.shape), rtol=1e-12)
                # one colour per pair, shared by the static and the Dy- line; the styles tell them apart
                if variant == "static":
                    np.testing.assert_array_equal(_pair_rgb(lines, j), _pair_rgb(art[f"{method}/dynamic"], j))
    # pair 0 (highest frequency) blue, the last pair red
    np.testing.assert_allclose(_pair_rgb(art["pi/dynamic"], 0), _rgb("#1f77b4"), atol=1e-6)
    np.testing.assert_allclose(_pair_rgb(art["pi/dynamic"], n - 1), _rgb("#d62728"), atol=1e-6)
    np.testing.assert_allclose(art["mscale/yarn/dynamic"].get_ydata(), 0.1 * math.log(s) + 1, rtol=1e-12)
    np.testing.assert_allclose(art["mscale/yarn/static"].get_ydata(), 0.1 * math.log(s) + 1, rtol=1e-12)
    for method in ("pi", "ntk"):
        np.testing.assert_array_equal(art[f"mscale/{method}/dynamic"].get_ydata(), 1.0)


def test_figure_axes_labels_and_colour_bar():
    fig = schedule_figure(dim=56, base_len=64, target_len=256, methods=("pi", "yarn"), num_t=11)
    bars = [a.colorbar for a in _artists(fig).values() if getattr(a, "colorbar", None) is not None]
    assert len(bars) == 1  # one colour bar of the channel pairs, shared by every panel
    bar = bars[0]
    panels = [ax for ax in fig.axes if ax is not bar.ax]
    assert [ax.get_yscale() for ax in panels] == ["log", "log", "linear"]
    assert [ax.get_title() for ax in panels] == [
        "Dy-PI against static PI   (κ(t) = 2 · t²)", "Dy-YaRN against static YaRN   (κ(t) = 1 · t²)",
        "attention temperature mscale",
    ]
    for ax in panels:
        assert ax.get_xlabel().startswith("diffusion time t") and ax.get_ylabel() and ax.get_xlim() == (0, 1)
    # line styles: one legend for the figure; the mscale panel names its methods
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["Dy- variant (DyPE)", "static method", "plain RoPE"]
    assert [t.get_text() for t in panels[2].get_legend().get_texts()] == [
        "plain RoPE", "PI (static)", "Dy-PI", "YaRN (static)", "Dy-YaRN",
    ]
    assert bar.ax.get_ylabel() == "channel pair j  (0 = highest frequency)"
    assert bar.ax.get_ylim() == (0, 27)
    np.testing.assert_allclose(bar.cmap(bar.norm([0, 27]))[:, :3], [_rgb("#1f77b4"), _rgb("#d62728")], atol=1e-6)
    assert "56 channels" in fig.get_suptitle() and "64 -> 256 tokens" in fig.get_suptitle()


def test_png_draws_the_curve_where_the_data_says(tmp_path):
    fig = schedule_figure(dim=8, base_len=4, target_len=16, num_t=21)
    path = save_figure(fig, tmp_path / "f.png")
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB")).astype(float) / 255
        assert im.size == (1200, 900) and im.text["Software"].startswith("dype_rope")
    ax = next(ax for ax in fig.axes if "Dy-PI" in ax.get_title())
    lines = _artists(fig)["pi/dynamic"]  # drawn over the static and plain lines
    xs, ys = _pair(lines, 0)  # the highest pair
    colour = _pair_rgb(lines, 0)
    height = pixels.shape[0]
    for i in (4, 8, 12):
        x, y = ax.transData.transform((xs[i], ys[i]))
        row, col = int(round(height - y)), int(round(x))
        patch = pixels[row - 1 : row + 2, col - 1 : col + 2].reshape(-1, 3)
        assert np.abs(patch - colour).max(axis=1).min() < 0.1, (i, patch, colour)


def test_svg_keeps_text_and_names_every_line(tmp_path):
    fig = schedule_figure(dim=8, base_len=4, target_len=16, num_t=11)
    path = save_figure(fig, tmp_path / "f.SVG")
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    texts = {"".join(t.itertext()) for t in root.iter(f"{ns}text")}
    assert {"attention temperature mscale", "plain RoPE", "Dy- variant (DyPE)", "static method"} <= texts
    groups = {g.get("id"): g for g in root.iter(f"{ns}g")}
    for name in [f"{m}/{v}" for m in ("pi", "ntk", "yarn") for v in ("plain", "static", "dynamic")]:
        paths = groups[name].findall(f"{ns}path")
        assert len(paths) == 4  # one per pair
        assert all(len(p.get("d").split("L")) == 11 for p in paths)  # one vertex per sample of t
    assert {f"mscale/{m}/{v}" for m in ("pi", "ntk", "yarn") for v in ("static", "dynamic")} <= set(groups)
    assert b"<dc:creator>" in path.read_bytes() and b"<dc:date>" not in path.read_bytes()


def test_save_figure_refuses_other_formats(tmp_path):
    fig = schedule_figure(dim=8, base_len=4, target_len=16, num_t=11)
    with pytest.raises(ValueError, match=r"\.png.*\.svg"):
        save_figure(fig, tmp_path / "f.jpg")
