"""What only CogView4 has: a position table the stock model stretches over the image. Static PI is that very
interpolation, and grids run past the table's size. The shared contract: tests/test_contract.py."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.cogview4 import BASE, COGVIEW4, TINY_COGVIEW4, tiny_cogview4
from families.row import encoding_calls


def tables_seen(model, n):
    (_, out), = encoding_calls(model, "rope", lambda: COGVIEW4.run(model, COGVIEW4.inputs((n, n), 0.5)))
    return out


@pytest.mark.parametrize("n", [16, 32])
def test_static_pi_is_the_models_own_interpolation(n):
    """Where TABLE / n is whole, the stock lookup has no rounding: static PI must give back the stock tables."""
    model = tiny_cogview4()
    stock_cos, stock_sin = tables_seen(model, n)
    with dype_rope.patch(model, method="pi", dynamic=False):
        cos, sin = tables_seen(model, n)
    torch.testing.assert_close(cos, stock_cos, rtol=0, atol=2e-5)
    torch.testing.assert_close(sin, stock_sin, rtol=0, atol=2e-5)


def test_a_forward_past_the_table_stays_finite():
    n = 6 * BASE  # 4x fills the 32-entry table at spacing 1; 6x runs past it
    model = tiny_cogview4()
    with dype_rope.patch(model):
        out = COGVIEW4.run(model, COGVIEW4.inputs((n, n), 0.95))
    assert out.shape == (1, TINY_COGVIEW4["out_channels"], 2 * n, 2 * n)
    assert torch.isfinite(out).all()
