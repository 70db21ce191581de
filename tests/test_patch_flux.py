"""What only FLUX (and Chroma, on the same FluxPosEmbed) has: parity with the authors' published transformer,
the timestep read by position and from Chroma's own argument order, independence of two patched models, the
fused processor's table path, and patch()'s bad-argument table. The shared contract: tests/test_contract.py."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import dype_rope
from families.flux import CHROMA, FLUX, flux_inputs, tiny_chroma, tiny_flux
from families.row import encoding_calls

F64 = torch.float64
CASES = json.loads((Path(__file__).parent / "data" / "dype_axis_frequencies.json").read_text())["cases"]


@pytest.fixture(scope="module")
def model():
    return tiny_flux()


def run(m, **inputs):
    with torch.no_grad():
        return m(**inputs).sample


def test_timestep_is_read_positionally_too(model):
    x = flux_inputs(12, 16, t=0.42)
    with dype_rope.patch(model, base_grid=(8, 8)):
        by_name = run(model, **x)
        order = ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"]
        with torch.no_grad():
            positional = model(*[x[k] for k in order]).sample
    assert torch.equal(by_name, positional)


def test_chroma_reads_the_timestep_from_its_own_argument_order():
    chroma = tiny_chroma()
    x = CHROMA.inputs((12, 16), 0.25)
    order = ["hidden_states", "encoder_hidden_states", "timestep", "img_ids", "txt_ids"]  # Chroma: no pooled input
    with dype_rope.patch(chroma, base_grid=(8, 8)), torch.no_grad():
        by_name = chroma(**x).sample
        positional = chroma(*[x[k] for k in order]).sample
        other_t = chroma(**CHROMA.inputs((12, 16), 0.9)).sample
    assert torch.equal(by_name, positional)
    assert not torch.equal(by_name, other_t)


def test_chroma_sees_the_tables_flux_sees():
    """Detected by its FluxPosEmbed without naming it: the same adapter, the same tables."""
    chroma, flux = tiny_chroma(), tiny_flux()
    with dype_rope.patch(chroma, base_grid=(8, 8)), dype_rope.patch(flux, base_grid=(8, 8)):
        x = CHROMA.inputs((12, 16), 0.6)
        (_, chroma_tables), = encoding_calls(chroma, "pos_embed", lambda: CHROMA.run(chroma, x))
        (_, flux_tables), = encoding_calls(flux, "pos_embed", lambda: FLUX.run(flux, FLUX.inputs((12, 16), 0.6)))
    assert all(torch.equal(a, b) for a, b in zip(chroma_tables, flux_tables))


def test_base_resolution_converts_through_16_px_per_token(model):
    x = flux_inputs(12, 16, t=0.7)
    with dype_rope.patch(model, base_resolution=128):
        a = run(model, **x)
    with dype_rope.patch(model, base_grid=(8, 8)) as handle:
        b = run(model, **x)
        assert handle.base_grid == (8, 8)
    with dype_rope.patch(model, base_resolution=(128, 160)) as handle:
        assert handle.base_grid == (8, 10)
    assert torch.equal(a, b)


# -- parity with the authors' published FLUX DyPE transformer ------------------------------------------------

class AuthorsPosEmbed(nn.Module):
    """FluxPosEmbed with the authors' per-axis frequencies and mscale (from their code), tables in float64."""

    def __init__(self, axis_freqs):
        super().__init__()
        self.axis_freqs = axis_freqs  # [(inv_freq array, mscale)] per axis

    def forward(self, ids):
        cos, sin = [], []
        for a, (inv, ms) in enumerate(self.axis_freqs):
            ang = ids[:, a].double()[:, None] * torch.tensor(inv, dtype=F64)[None]
            cos.append((torch.cos(ang) * ms).repeat_interleave(2, dim=1))
            sin.append((torch.sin(ang) * ms).repeat_interleave(2, dim=1))
        return torch.cat(cos, 1).float(), torch.cat(sin, 1).float()


def authors_case(method, dynamic, t, cur_len):
    for c in CASES:
        if (c["method"], c["dynamic"], c["dim"], c["base_len"], c["cur_len"]) == (method, dynamic, 6, 8, cur_len) and \
                math.isclose(c["t"], t):
            return np.array(c["inv_freq"]), c["mscale"]
    raise LookupError(f"no reference case for {method} dynamic={dynamic} t={t} cur_len={cur_len}")


@pytest.mark.parametrize("method, dynamic", [("yarn", True), ("yarn", False), ("ntk", True), ("ntk", False)])
@pytest.mark.parametrize("t", [1.0, 0.5, 0.1])
@pytest.mark.parametrize("grid", [(12, 16), (24, 9)])
def test_outputs_match_the_authors_transformer(model, method, dynamic, t, grid):
    plain_axis0 = (10000.0 ** (-np.arange(0, 4, 2) / 4), 1.0)
    reference = copy.deepcopy(model)
    reference.pos_embed = AuthorsPosEmbed([plain_axis0, authors_case(method, dynamic, t, grid[0]),
                                           authors_case(method, dynamic, t, grid[1])])
    x = flux_inputs(*grid, t=t)
    expected = run(reference, **x)
    with dype_rope.patch(model, method=method, dynamic=dynamic, base_grid=(8, 8)):
        out = run(model, **x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(out, run(model, **x))  # the rescaling really changed the output


# -- independence ----------------------------------------------------------------------------------------------

def test_two_patched_models_do_not_interfere():
    m1, m2 = tiny_flux(seed=0), tiny_flux(seed=0)
    x1, x2 = flux_inputs(12, 16, t=0.9), flux_inputs(20, 8, t=0.3)
    with dype_rope.patch(m1, method="yarn", base_grid=(8, 8)):
        alone1 = run(m1, **x1)
    with dype_rope.patch(m2, method="pi", base_grid=(4, 4), lambda_t=1.0):
        alone2 = run(m2, **x2)
    with dype_rope.patch(m1, method="yarn", base_grid=(8, 8)), \
            dype_rope.patch(m2, method="pi", base_grid=(4, 4), lambda_t=1.0):
        for _ in range(2):
            assert torch.equal(run(m2, **x2), alone2)
            assert torch.equal(run(m1, **x1), alone1)


# -- the fused processor ---------------------------------------------------------------------------------------

def test_fused_table_path_matches_the_stock_processor(model):
    """Called with diffusers' (cos, sin) tables, the fused processor rotates through the table kernel and gives
    what FluxAttnProcessor gives (joint attention: text and image each with their own learned norms)."""
    from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor

    from dype_rope.adapters.flux_fused import FusedFluxAttnProcessor

    attn = next(m for m in model.modules() if isinstance(m, FluxAttention))
    g = torch.Generator().manual_seed(0)
    hidden, text = torch.randn(1, 6, 32, generator=g), torch.randn(1, 3, 32, generator=g)
    cos, sin = dype_rope.rope_tables(torch.randint(0, 40, (9, 3)).float(), dype_rope.plain_plan((4, 6, 6), 10000.0))
    with torch.no_grad():
        want = FluxAttnProcessor()(attn, hidden, text, image_rotary_emb=(cos, sin))
        got = FusedFluxAttnProcessor("triton")(attn, hidden, text, image_rotary_emb=(cos, sin))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# -- bad input -------------------------------------------------------------------------------------------------

def test_patching_twice_is_refused(model):
    with dype_rope.patch(model, base_grid=(8, 8)):
        with pytest.raises(RuntimeError, match="already patched"):
            dype_rope.patch(model)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(method="linear"), ValueError, "unknown method 'linear'"),
    (dict(base_grid=(0, 8)), ValueError, "base_grid must be positive"),
    (dict(base_grid=(8,)), ValueError, "base_grid needs 2 sizes"),
    (dict(base_grid=-3), ValueError, "base_grid must be positive"),
    (dict(base_resolution=1000), ValueError, "not a multiple of the model's 16 px per token"),
    (dict(base_resolution=0), ValueError, "base_resolution must be positive"),
    (dict(base_resolution=(16, 1024, 1024)), ValueError, r"base_resolution is \(height, width\)"),
    (dict(base_grid=8, base_resolution=128), ValueError, "not both"),
    (dict(aspect="square"), ValueError, "aspect must be one of"),
    (dict(backend="cuda"), ValueError, "backend must be one of"),
    (dict(lambda_t=-1.0), ValueError, "lambda_t must be finite and >= 0"),
])
def test_bad_arguments_are_named(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        dype_rope.patch(model, **kwargs)
    assert not dype_rope.is_patched(model) and not model._forward_pre_hooks


@pytest.mark.parametrize("axes, message", [((4, 6, 8), "sum to 18, but the attention head dim is 16"),
                                           ((5, 5, 6), "axis 0 has 5")])
def test_bad_axes_are_named_and_leave_the_model_untouched(axes, message):
    m = tiny_flux()
    m.pos_embed.axes_dim = list(axes)
    original = m.pos_embed
    with pytest.raises(ValueError, match=message):
        dype_rope.patch(m)
    assert m.pos_embed is original and not m._forward_pre_hooks and not dype_rope.is_patched(m)


@pytest.mark.parametrize("t, message", [(float("nan"), "got nan"), (1.5, "got 1.5"), (-0.1, "got -0.1")])
def test_bad_timestep_is_named(model, t, message):
    with dype_rope.patch(model, base_grid=(8, 8)):
        with pytest.raises(ValueError, match=f"diffusion time in \\[0, 1\\].*{message}"):
            run(model, **flux_inputs(12, 16, t=t))


def test_batch_with_different_times_gets_one_plan_per_sample(model):
    one = flux_inputs(12, 16, t=0.5)
    two = flux_inputs(12, 16, t=0.5, batch=2)
    two.update(hidden_states=one["hidden_states"].repeat(2, 1, 1), timestep=torch.tensor([0.25, 0.5]),
               encoder_hidden_states=one["encoder_hidden_states"].repeat(2, 1, 1),
               pooled_projections=one["pooled_projections"].repeat(2, 1))
    with dype_rope.patch(model, base_grid=(8, 8)):
        mixed = run(model, **two)
        two["timestep"] = torch.tensor([0.5, 0.5])
        batched = run(model, **two)
        single = run(model, **one)
    torch.testing.assert_close(batched, single.expand(2, -1, -1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[1:], single, rtol=1e-5, atol=1e-6)  # sample 1 at its own time, 0.5
    assert not torch.allclose(mixed[0], single[0], rtol=1e-3, atol=1e-3)
