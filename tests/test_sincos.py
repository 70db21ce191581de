"""dype_rope.sincos: the stock pieces reproduce diffusers' sin-cos embedding bit for bit, and the schedules map
onto its frequencies as documented (PI scales offsets from the centre, s <= 1 changes nothing)."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import get_1d_sincos_pos_embed_from_grid, get_2d_sincos_pos_embed

from dype_rope import DyPEConfig
from dype_rope.sincos import axis_sincos, grid_sincos, sincos_frequencies, sincos_plain
from reference_dype import frequencies

F64 = torch.float64


@pytest.mark.parametrize("channels", [4, 8, 64, 768])
def test_stock_axis_is_diffusers_bit_for_bit(channels):
    pos = torch.arange(37, dtype=torch.float32) / 1.5
    plain = sincos_plain(channels, torch.empty(0, dtype=F64))
    assert torch.equal(axis_sincos(pos, plain), get_1d_sincos_pos_embed_from_grid(channels, pos))


@pytest.mark.parametrize("grid, base_size", [(12, 8), (96, 64), (5, 5)])
def test_stock_grid_is_diffusers_bit_for_bit(grid, base_size):
    dim = 32
    pos = torch.arange(grid, dtype=torch.float32) / (grid / base_size)
    plain = sincos_plain(dim // 2, torch.empty(0, dtype=F64))
    emb = axis_sincos(pos, plain)
    assert torch.equal(grid_sincos(emb, emb), get_2d_sincos_pos_embed(dim, grid, base_size=base_size))


def test_grid_puts_columns_first():
    rows, cols = torch.randn(3, 4, dtype=F64), torch.randn(5, 4, dtype=F64)
    emb = grid_sincos(rows, cols).reshape(3, 5, 8)
    assert torch.equal(emb[2, 1, :4], cols[1]) and torch.equal(emb[2, 1, 4:], rows[2])


@pytest.mark.parametrize("method", ["pi", "ntk", "yarn"])
@pytest.mark.parametrize("dynamic", [True, False])
@pytest.mark.parametrize("s, t", [(0.5, 1.0), (1.0, 0.3), (3.0, 0.7), (4.0, 1.0)])
def test_frequencies_are_the_schedule_with_dim_the_half_width(method, dynamic, s, t):
    channels, extent = 16, 64 * 2 / 3
    cfg = DyPEConfig(method=method, dynamic=dynamic)
    got = sincos_frequencies(channels, extent, torch.tensor(s, dtype=F64), torch.tensor(t, dtype=F64), cfg)
    ref, _ = frequencies(channels, 10000.0, extent, s, t, method=method, dynamic=dynamic)
    torch.testing.assert_close(got, torch.from_numpy(ref), rtol=1e-12, atol=0)
    if s <= 1:
        assert torch.equal(got, sincos_plain(channels, got))


def test_static_pi_maps_the_larger_image_onto_the_trained_band_around_the_centre():
    channels, s, centre = 8, 4.0, 31.5
    plain = sincos_plain(channels, torch.empty(0, dtype=F64))
    cfg = DyPEConfig(method="pi", dynamic=False)
    omega = sincos_frequencies(channels, 64.0, torch.tensor(s, dtype=F64), torch.tensor(1.0, dtype=F64), cfg)
    wide = torch.linspace(centre - 128, centre + 128, 9, dtype=F64)
    narrow = centre + (wide - centre) / s
    torch.testing.assert_close(axis_sincos(wide, plain, omega, centre), axis_sincos(narrow, plain), rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels", [0, 3, -2, 2.0])
def test_bad_channel_counts_are_named(channels):
    with pytest.raises(ValueError, match="channels"):
        sincos_plain(channels, torch.empty(0, dtype=F64))
