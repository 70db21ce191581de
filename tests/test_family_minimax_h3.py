"""MiniMax-H3 (adapters/families/refused.py): refused, for the reason its own pipeline's position grid shows."""

from __future__ import annotations

import pytest

import dype_rope
from families.tiny import tiny


def test_minimax_h3_is_refused_because_its_positions_span_a_fixed_area():
    """The reason is checked against its pipeline's own grid: at 2x the rows and columns a square canvas still
    spans [0, 32) on both axes, only twice as densely; a 16:9 canvas keeps its (wider than tall) extents too."""
    from diffusers.modular_pipelines.minimax_h3.before_denoise import _frame_position_grid

    small, _ = _frame_position_grid(32, 32, 2, 2)
    large, _ = _frame_position_grid(64, 64, 2, 2)
    assert small.min() == large.min() == 0 and small.max() < 32 and large.max() < 32 and len(large) == 4 * len(small)
    wide, _ = _frame_position_grid(36, 64, 2, 2)
    wider, _ = _frame_position_grid(72, 128, 2, 2)

    def span(grid, axis):  # first position, and last + one spacing: the range the axis covers
        values = grid[:, axis].unique()
        return values[0].item(), (values[-1] + values[1] - values[0]).item()

    for axis in (0, 1):
        assert span(wide, axis) == pytest.approx(span(wider, axis), abs=1e-9)
    assert span(wide, 1)[1] - span(wide, 1)[0] > 32 > span(wide, 0)[1] - span(wide, 0)[0]
    model = tiny("MiniMaxH3Transformer3DModel", dict(
        num_attention_heads=2, attention_head_dim=16, hidden_size=32, num_layers=1, num_refiner_layers=1, ffn_dim=32,
        in_channels=4, audio_in_channels=4, text_dim=16, freq_dim=16, time_embed_hidden_dim=16, time_embed_dim=16,
        rope_freq_dim=2,
    ))
    with pytest.raises(TypeError, match="aspect-normalised grid of fixed area"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)
