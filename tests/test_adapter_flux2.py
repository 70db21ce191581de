"""What only FLUX.2 has: four axes (T, H, W, L) of which T and L are never rescaled, theta 2000, and two fused
processors (joint and parallel self-attention) with their own table path. The shared contract:
tests/test_contract.py."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.flux import FLUX2, tiny_flux2
from families.row import encoding_calls


def test_the_replacement_keeps_the_encoding_settings():
    model = tiny_flux2()
    with dype_rope.patch(model):
        assert model.pos_embed.theta == 2000 and list(model.pos_embed.axes_dim) == [8, 8, 8, 8]


def test_time_and_text_axes_keep_the_stock_tables_bit_for_bit():
    model = tiny_flux2()
    stock = tiny_flux2().pos_embed
    with dype_rope.patch(model, base_grid=FLUX2.base):
        calls = encoding_calls(model, "pos_embed", lambda: FLUX2.run(model, FLUX2.inputs((8, 9), 0.7, cond=(3, 3))))
    assert len(calls) == 2  # image tokens, then text tokens
    for (ids,), (cos, sin) in calls:
        stock_cos, stock_sin = stock(ids)
        for part in (slice(0, 8), slice(24, 32)):  # T and L
            assert torch.equal(cos[:, part], stock_cos[:, part]) and torch.equal(sin[:, part], stock_sin[:, part])
        assert not torch.equal(cos[:, 8:24], stock_cos[:, 8:24])  # H and W did move


@pytest.mark.parametrize("kind", ["Flux2Attention", "Flux2ParallelSelfAttention"])
def test_fused_table_path_matches_the_stock_processor(kind):
    """Called with diffusers' (cos, sin) tables, the fused processors rotate through the table kernel and give
    what the stock processors give."""
    from diffusers.models.transformers import transformer_flux2 as tf2

    from dype_rope.adapters.flux2_fused import FusedFlux2AttnProcessor, FusedFlux2ParallelSelfAttnProcessor

    model = tiny_flux2()
    attn = next(a for a in model.modules() if type(a).__name__ == kind)
    g = torch.Generator().manual_seed(0)
    hidden, text = torch.randn(1, 6, 64, generator=g), torch.randn(1, 3, 64, generator=g)
    positions = torch.randint(0, 40, (9, 4)).float()
    cos, sin = dype_rope.rope_tables(positions, dype_rope.plain_plan((8, 8, 8, 8), 2000.0))

    def no_plan():
        raise AssertionError("the table path must not ask for a plan")

    with torch.no_grad():
        if kind == "Flux2Attention":
            want = tf2.Flux2AttnProcessor()(attn, hidden, text, image_rotary_emb=(cos, sin))
            got = FusedFlux2AttnProcessor(no_plan)(attn, hidden, text, image_rotary_emb=(cos, sin))
        else:
            joint = torch.cat([text, hidden], dim=1)
            want = (tf2.Flux2ParallelSelfAttnProcessor()(attn, joint, image_rotary_emb=(cos, sin)),)
            got = (FusedFlux2ParallelSelfAttnProcessor(no_plan)(attn, joint, image_rotary_emb=(cos, sin)),)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
