"""The interleaved-MRoPE mechanism's row declarations (adapters/mechanisms/mrope.py), checked against the two
upstream modules it serves: their ids layouts and signatures, the reduction of per-token times, the probe's
refusal of a layout the row does not describe."""

from __future__ import annotations

import pytest
import torch

from dype_rope.adapters.mechanisms.mrope import IdsLayout, noisiest, probe

THETA, HEAD, SECTIONS = 5_000_000.0, 24, (6, 3, 3)
COSMOS = IdsLayout(axes_first=True, device_dtype=True)
IDEOGRAM = IdsLayout()


def modules():
    from diffusers.models.transformers.transformer_cosmos3 import Cosmos3VLTextRotaryEmbedding
    from diffusers.models.transformers.transformer_ideogram4 import Ideogram4MRoPE

    return Cosmos3VLTextRotaryEmbedding(HEAD, THETA, SECTIONS), Ideogram4MRoPE(HEAD, THETA, SECTIONS)


def test_both_layouts_reach_the_same_upstream_tables():
    """The two upstream modules compute the same interleaving; called through their declared layouts on the same
    ids [B, N, 3], they must return the same tables (a wrong permutation would swap rows and frames)."""
    cosmos, ideogram = modules()
    ids = torch.stack([torch.arange(5) * 3, torch.arange(5) % 2 + 7, torch.arange(5) + 11], dim=-1)
    ids = torch.stack([ids, ids.flip(0)])
    with torch.no_grad():
        a, b = COSMOS.call(cosmos, ids), IDEOGRAM.call(ideogram, ids)
    for x, y in zip(a, b):
        assert x.shape == (2, 5, HEAD) and torch.equal(x, y)
    assert torch.equal(COSMOS.to_last(ids.permute(2, 0, 1)), ids)
    assert torch.equal(COSMOS.to_last(ids[..., 0]), ids[..., :1].expand(-1, -1, 3))  # [B, N]: one index, 3 axes


def test_per_token_times_are_read_at_the_generated_tokens_noisiest():
    """Hand-derived: time 0 = noise (reversed) takes the smallest image token's value; 1000 = noise the largest."""
    t = torch.tensor([[0.1, 0.5, 0.7], [0.0, 0.9, 0.6]])
    image = torch.tensor([[False, True, True], [False, True, True]])
    assert torch.equal(noisiest(t, image, False, True, 1.0), torch.tensor([0.5, 0.6]))
    assert torch.equal(noisiest(torch.tensor([300.0, 800.0]), None, True, False, 1000.0), torch.tensor([800.0]))
    per_sample = torch.tensor([0.2, 0.4])  # [B] without token_times: one per sample, untouched
    assert noisiest(per_sample, None, False, True, 1.0) is per_sample


def test_a_module_called_with_another_rows_layout_is_refused():
    cosmos, ideogram = modules()
    with pytest.raises(TypeError, match="cannot be called with position ids as its row describes"):
        probe(ideogram, "Ideogram4MRoPE", HEAD, SECTIONS, THETA, COSMOS)
    with pytest.raises(TypeError, match="this row does not describe the module"):
        probe(cosmos, "Cosmos3VLTextRotaryEmbedding", HEAD, (6, 2, 3), THETA, COSMOS)
    probe(cosmos, "Cosmos3VLTextRotaryEmbedding", HEAD, SECTIONS, THETA, COSMOS)  # its own layout passes
