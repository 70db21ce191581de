"""What only SD3 has: an absolute sin-cos embedding cropped from a stored grid. Inside the stored grid plain
frequencies continue the stock crop, past it the patched model runs where the stock one raises, a base grid past
it extrapolates plainly, the patch size reads tokens from latent pixels. The shared contract:
tests/test_contract.py."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.row import encoding_calls
from families.sd3 import MAX, SD3, STORED, reference_embedding, sd3_inputs, tiny_sd3


def embedding_seen(model, grid, t, patch=1):
    x = sd3_inputs(grid, patch=patch) | {"timestep": torch.tensor([1000.0 * t])}
    (_, out), = encoding_calls(model, "pos_embed", lambda: SD3.run(model, x))
    return out[0].double()


def test_remove_takes_the_crop_back_and_the_stored_grid_limit_with_it():
    model = tiny_sd3()
    big = SD3.inputs((32, 32), 0.9)
    with dype_rope.patch(model):
        SD3.run(model, big)
    assert "cropped_pos_embed" not in vars(model.pos_embed)
    with pytest.raises(ValueError, match="pos_embed_max_size"):  # the stock limit is back
        SD3.run(model, big)


def test_inside_the_stored_grid_the_layout_continues_the_stock_crop():
    """Past the base grid but inside the stored one, plain frequencies must give back diffusers' own crop: the
    position spacing and centring are the model's."""
    model = tiny_sd3()
    stock = embedding_seen(model, (10, 12), 0.3)
    with dype_rope.patch(model, method="none"):
        got = embedding_seen(model, (10, 12), 0.3)
    torch.testing.assert_close(got, stock, rtol=0, atol=1e-6)


def test_a_base_grid_beyond_the_stored_grid_extrapolates_plainly():
    model = tiny_sd3()
    with dype_rope.patch(model, base_grid=(16, 16)):
        got = embedding_seen(model, (14, 14), 0.5)
    torch.testing.assert_close(got, reference_embedding(14, 14, 0.5, (16, 16)), rtol=0, atol=1e-5)


def test_default_base_grid_converts_from_pixels():
    with dype_rope.patch(tiny_sd3(), base_resolution=512) as handle:  # 16 px per token
        assert handle.base_grid == (32, 32)


def test_patch_size_2_reads_tokens_from_latent_pixels():
    """SD3's real patch size: PatchEmbed gets latent pixels and crops in tokens."""
    m = tiny_sd3(patch_size=2, sample_size=2 * STORED)
    small = SD3.inputs((STORED, STORED), 0.6) | sd3_inputs((STORED, STORED), patch=2)  # the 8 x 8 token base grid
    ref = SD3.run(m, small)
    with dype_rope.patch(m, method="ntk") as handle:
        assert handle.base_grid == (STORED, STORED)
        assert torch.equal(SD3.run(m, small), ref)
        got = embedding_seen(m, (20, 14), 0.6, patch=2)
    want = reference_embedding(20, 14, 0.6, (STORED, STORED), method="ntk")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_past_the_stored_grid_the_stock_model_raises_and_the_patched_one_runs():
    model = tiny_sd3()
    x = SD3.inputs((4 * STORED, 4 * STORED), 0.8)
    assert 4 * STORED > MAX
    with pytest.raises(ValueError, match="pos_embed_max_size"):
        SD3.run(model, x)
    with dype_rope.patch(model):
        out = SD3.run(model, x)
    assert out.shape == (1, 4, 4 * STORED, 4 * STORED) and torch.isfinite(out).all()


def test_a_patch_embed_without_a_stored_grid_is_refused_and_left_untouched():
    m = tiny_sd3(pos_embed_max_size=None)
    with pytest.raises(TypeError, match="pos_embed_max_size"):
        dype_rope.patch(m)
    assert not dype_rope.is_patched(m) and "cropped_pos_embed" not in vars(m.pos_embed)
    assert not m._forward_pre_hooks and not m._forward_hooks
