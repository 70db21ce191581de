"""dype_rope.patch() on diffusers' FLUX: identity, round trip, parity with the authors, compile, bad input."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo.testing
from torch import nn

import dype_rope
from dype_rope import DyPEConfig, build_plan, rope_tables
from dype_rope.adapters.base import image_spans
from tiny_models import flux_img_ids, flux_inputs, tiny_flux

F64 = torch.float64
CASES = json.loads((Path(__file__).parent / "data" / "dype_axis_frequencies.json").read_text())["cases"]


@pytest.fixture(scope="module")
def model():
    return tiny_flux()


def run(m, **inputs):
    with torch.no_grad():
        return m(**inputs).sample


def capture_tables(m, inputs):
    seen = []
    h = m.pos_embed.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
    try:
        run(m, **inputs)
    finally:
        h.remove()
    return seen[0]


# -- identity and round trip ----------------------------------------------------------------------------------

@pytest.mark.parametrize("grid", [(8, 8), (6, 8), (3, 5)])
@pytest.mark.parametrize("method", ["yarn", "ntk", "pi"])
def test_at_or_below_base_grid_is_bit_exact(model, grid, method):
    x = flux_inputs(*grid, t=0.8)
    ref = run(model, **x)
    with dype_rope.patch(model, method=method, base_grid=(8, 8)):
        assert torch.equal(run(model, **x), ref)


def test_method_none_is_bit_exact_beyond_base(model):
    x = flux_inputs(12, 16, t=0.6)
    ref = run(model, **x)
    with dype_rope.patch(model, method="none", base_grid=(8, 8)):
        assert torch.equal(run(model, **x), ref)


def test_remove_restores_the_model_exactly(model):
    x = flux_inputs(12, 16, t=0.9)
    ref = run(model, **x)
    before = dict(model.__dict__)
    pos_embed = model.pos_embed
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handle = dype_rope.patch(model, base_grid=(8, 8))
    assert dype_rope.is_patched(model) and handle.active
    assert not torch.equal(run(model, **x), ref)
    handle.remove()
    assert not dype_rope.is_patched(model) and not handle.active
    assert model.pos_embed is pos_embed
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert model.__dict__.keys() == before.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(run(model, **x), ref)
    handle.remove()  # idempotent


def test_context_manager_and_unpatch(model):
    x = flux_inputs(12, 16, t=0.5)
    ref = run(model, **x)
    with dype_rope.patch(model, base_grid=(8, 8)) as handle:
        assert handle.model is model
    assert torch.equal(run(model, **x), ref)
    dype_rope.patch(model, base_grid=(8, 8))
    dype_rope.unpatch(model)
    assert torch.equal(run(model, **x), ref)
    with pytest.raises(ValueError, match="not patched"):
        dype_rope.unpatch(model)


# -- the tables the model sees ---------------------------------------------------------------------------------

@pytest.mark.parametrize("aspect", ["per-axis", "isotropic"])
@pytest.mark.parametrize("t", [1.0, 0.37, 0.0])
def test_tables_follow_the_schedule_on_the_image_grid(model, aspect, t):
    h, w = 12, 20
    x = flux_inputs(h, w, t=t)
    with dype_rope.patch(model, base_grid=(8, 10), aspect=aspect):
        ids, (cos, sin) = capture_tables(model, x)
    sh, sw = h / 8, w / 10
    if aspect == "isotropic":
        sh = sw = max(sh, sw)
    plan = build_plan((4, 6, 6), 10000.0, torch.tensor([1.0, sh, sw], dtype=F64), torch.tensor(t, dtype=F64),
                      DyPEConfig(), (1.0, 8.0, 10.0))
    ref_cos, ref_sin = rope_tables(ids, plan)
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)


def test_timestep_is_read_positionally_too(model):
    x = flux_inputs(12, 16, t=0.42)
    with dype_rope.patch(model, base_grid=(8, 8)):
        by_name = run(model, **x)
        order = ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"]
        with torch.no_grad():
            positional = model(*[x[k] for k in order]).sample
    assert torch.equal(by_name, positional)


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


def test_default_base_grid_is_flux_native(model):
    with dype_rope.patch(model) as handle:
        assert handle.base_grid == (64, 64)


def test_conditioning_image_tokens_keep_their_positions_and_do_not_set_the_scale():
    gen = flux_img_ids(12, 16)
    cond = flux_img_ids(40, 40, frame=1)  # a larger reference image (FLUX Kontext marks it with frame 1)
    assert image_spans(torch.cat([gen, cond])).tolist() == [1.0, 12.0, 16.0]
    assert image_spans(gen.unsqueeze(0)).tolist() == [1.0, 12.0, 16.0]


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


# -- compile ---------------------------------------------------------------------------------------------------

def test_compiles_into_one_graph_over_28_steps(model):
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    with dype_rope.patch(model, base_grid=(8, 8)):
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        sigmas = torch.linspace(1.0, 1 / 28, 28)
        for sigma in sigmas:
            x = flux_inputs(12, 16, t=float(sigma))
            with torch.no_grad():
                got = compiled(**x).sample
        assert counter.frame_count == 1
        torch.testing.assert_close(got, run(model, **x), rtol=1e-6, atol=1e-6)


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


# -- bad input -------------------------------------------------------------------------------------------------

def test_unsupported_model_says_how_to_register():
    with pytest.raises(TypeError, match="no adapter for Linear.*register_adapter"):
        dype_rope.patch(nn.Linear(2, 2))


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


def test_batch_with_different_times_is_refused_on_host(model):
    one = flux_inputs(12, 16, t=0.5)
    two = {k: v.repeat(2, *[1] * (v.dim() - 1)) if k in ("hidden_states", "encoder_hidden_states",
                                                          "pooled_projections") else v for k, v in one.items()}
    two["timestep"] = torch.tensor([0.5, 0.25])
    with dype_rope.patch(model, base_grid=(8, 8)):
        with pytest.raises(ValueError, match="share one diffusion time"):
            run(model, **two)
        two["timestep"] = torch.tensor([0.5, 0.5])
        batched = run(model, **two)
        single = run(model, **one)
    torch.testing.assert_close(batched, single.expand(2, -1, -1), rtol=1e-5, atol=1e-6)


def test_position_embedding_refuses_calls_outside_the_model(model):
    with dype_rope.patch(model, base_grid=(8, 8)):
        with pytest.raises(RuntimeError, match="outside the model's forward"):
            model.pos_embed(flux_img_ids(4, 4))
