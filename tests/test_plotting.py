"""Schedule figures: the plotted data against closed forms, the PNG encoder against Pillow's decoder, the
rasteriser against hand-placed pixels, the SVG's points mapped back to the data."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from dype_rope import DyPEConfig
from dype_rope._font import GLYPHS
from dype_rope._raster import Canvas, encode_png
from dype_rope.plotting import (
    pair_color,
    render_png,
    render_svg,
    save_figure,
    schedule_curves,
    schedule_figure,
    to_pixels,
)

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


def test_figure_series_are_the_curves():
    dim, base, target = 8, 4, 16
    fig = schedule_figure(dim=dim, base_len=base, target_len=target, num_t=21)
    n = dim // 2
    assert [p.title for p in fig.panels] == ["Dy-PI vs PI", "Dy-NTK vs NTK", "Dy-YaRN vs YaRN", "attention temperature mscale"]
    ts = np.linspace(0, 1, 21)
    for panel, method in zip(fig.panels[:3], ("pi", "ntk", "yarn")):
        assert len(panel.series) == 3 * n
        plain, static, dynamic = panel.series[:n], panel.series[n : 2 * n], panel.series[2 * n :]
        ref_dy, _ = schedule_curves(DyPEConfig(method, True), dim, 10000.0, base, target, ts)
        ref_st, _ = schedule_curves(DyPEConfig(method, False), dim, 10000.0, base, target, ts)
        for j in range(n):
            np.testing.assert_array_equal(plain[j].y, np.full(21, _plain(dim, 10000.0)[j]))
            np.testing.assert_array_equal(static[j].y, ref_st[:, j])
            np.testing.assert_array_equal(dynamic[j].y, ref_dy[:, j])
            assert (plain[j].dash, static[j].dash, dynamic[j].dash) == ("dotted", "dashed", "solid")
            assert static[j].color == dynamic[j].color == pair_color(j, n)
    yarn_ms = [s.y for s in fig.panels[3].series if s.dash == "solid"][-1]
    np.testing.assert_allclose(yarn_ms, 0.1 * math.log(target / base) + 1)


def test_every_label_has_glyphs():
    fig = schedule_figure()
    texts = [fig.title]
    for p in fig.panels:
        xt, yt = p.ticks()
        texts += [p.title, p.note, p.xlabel, p.ylabel] + [label for _, label in xt + yt]
    missing = {ch for text in texts for ch in text.upper() if ch not in GLYPHS}
    assert not missing, f"characters without a glyph: {sorted(missing)}"


def test_png_encoder_decodes_in_pillow():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    data = encode_png(pixels, {"note": "hello"})
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.mode == "RGB" and image.size == (23, 17)
    np.testing.assert_array_equal(np.asarray(image), pixels)
    assert image.text["note"] == "hello"
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_png(pixels.astype(np.float32))


def test_lines_land_on_the_hand_placed_pixels():
    canvas = Canvas(20, 10)
    canvas.polyline([2, 12], [5, 5], (255, 0, 0))
    ink = np.argwhere((canvas.pixels != 255).any(-1))
    assert {tuple(p) for p in ink} == {(5, x) for x in range(2, 13)}
    assert (canvas.pixels[5, 2:13] == (255, 0, 0)).all()

    canvas = Canvas(20, 20)
    canvas.polyline([1, 15], [2, 16], (0, 0, 255), clip=(0, 0, 9, 19))  # diagonal, clipped at x = 9
    ink = np.argwhere((canvas.pixels != 255).any(-1))
    assert set(ink[:, 1]) == set(range(1, 10))
    assert np.abs(ink[:, 0] - (ink[:, 1] + 1)).max() <= 1  # within a pixel of y = x + 1

    canvas = Canvas(40, 5)
    canvas.polyline([0, 39], [2, 2], (0, 0, 0), dash=(4.0, 4.0))
    row = (canvas.pixels[2] != 255).any(-1)
    assert 14 <= row.sum() <= 26 and not row[5:7].any() and row[:3].all()

    canvas = Canvas(30, 10)
    canvas.polyline([0, 29], [4, 4], (0, 0, 0), width=3)
    assert set(np.argwhere((canvas.pixels != 255).any(-1))[:, 0]) == {3, 4, 5}


def test_text_draws_the_glyph_bitmap():
    canvas = Canvas(12, 9)
    canvas.text(1, 4.5, "1")
    ink = (canvas.pixels != 255).any(-1)
    np.testing.assert_array_equal(ink[1:8, 1:6], GLYPHS["1"])
    assert ink.sum() == GLYPHS["1"].sum()


def test_png_figure_draws_the_top_curve_where_the_data_says():
    fig = schedule_figure(dim=8, base_len=4, target_len=16, num_t=21)
    pixels = render_png(fig)
    assert pixels.shape == (fig.height, fig.width, 3)
    box = fig.boxes()[0]
    top = fig.panels[0].series[-1]  # Dy-PI, lowest-frequency pair, drawn last
    for i in (5, 10, 15):
        px, py = to_pixels(fig.panels[0], box, top.x[i : i + 1], top.y[i : i + 1])
        assert tuple(pixels[int(round(py[0])), int(round(px[0]))]) == top.color


def test_svg_points_map_back_to_the_data():
    fig = schedule_figure(dim=8, base_len=4, target_len=16, num_t=21)
    root = ET.fromstring(render_svg(fig))
    ns = {"s": "http://www.w3.org/2000/svg"}
    groups = root.findall("s:g", ns)
    assert len(groups) == len(fig.panels)
    for panel, box, group in zip(fig.panels, fig.boxes(), groups):
        lines = group.findall("s:polyline", ns)
        assert len(lines) == len(panel.series)
        x0, x1, y0, y1 = panel.limits()
        bx0, by0, bx1, by1 = box
        for line, series in zip(lines, panel.series):
            pts = np.array([p.split(",") for p in line.get("points").split()], dtype=np.float64)
            x = x0 + (pts[:, 0] - bx0) / (bx1 - bx0) * (x1 - x0)
            y = y0 + (by1 - pts[:, 1]) / (by1 - by0) * (y1 - y0)
            y = 10**y if panel.log_y else y
            np.testing.assert_allclose(x, series.x, atol=0.01 * (x1 - x0) / (bx1 - bx0))
            np.testing.assert_allclose(np.log10(y) if panel.log_y else y, np.log10(series.y) if panel.log_y else series.y,
                                       atol=0.01 * (y1 - y0) / (by1 - by0))
            assert line.get("stroke") == "#%02x%02x%02x" % series.color
            assert (line.get("stroke-dasharray") is None) == (series.dash == "solid")


def test_save_figure_by_suffix(tmp_path):
    fig = schedule_figure(dim=8, base_len=4, target_len=16, num_t=11)
    png = save_figure(fig, tmp_path / "f.png")
    with Image.open(png) as im:
        assert im.size == (fig.width, fig.height) and im.text["Software"] == "dype_rope"
    svg = save_figure(fig, tmp_path / "f.SVG")
    assert ET.parse(svg).getroot().tag.endswith("svg")
    with pytest.raises(ValueError, match=r"\.png.*\.svg"):
        save_figure(fig, tmp_path / "f.jpg")
