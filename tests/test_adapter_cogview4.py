"""dype_rope.patch() on CogView4: identity, tables against a float64 reference of the schedules on CogView4's
position table, static PI against the model's own interpolation, t from its own pipeline convention, compile,
round trip, forwards at and past the table's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch._dynamo.testing

import dype_rope
from dype_rope import DyPEConfig
from reference_dype import frequencies
from tiny_cogview4 import TINY_COGVIEW4, cogview4_inputs, tiny_cogview4

BASE = TINY_COGVIEW4["sample_size"] // TINY_COGVIEW4["patch_size"]  # 8 tokens
TABLE = TINY_COGVIEW4["rope_axes_dim"][0]  # 32 positions
HALF = TINY_COGVIEW4["attention_head_dim"] // 2  # channels per axis


@pytest.fixture(scope="module")
def model():
    return tiny_cogview4()


def run(m, **inputs):
    with torch.no_grad():
        return m(**inputs).sample


def tables_seen(m, inputs):
    seen = []
    hook = m.rope.register_forward_hook(lambda mod, args, out: seen.append(out))
    try:
        run(m, **inputs)
    finally:
        hook.remove()
    return seen[0]


def reference_tables(h, w, t, cfg, aspect="per-axis", base=(BASE, BASE)):
    """Rows then columns, D/4 pairs each, "half" layout; a rescaled axis keeps the base grid's spacing
    TABLE / base, any other axis looks up floor(i * TABLE / n)."""
    ratios = [h / base[0], w / base[1]]
    if aspect == "isotropic":
        ratios = [max(ratios)] * 2
    freqs, scales = [], []
    for n, ratio, b in zip((h, w), ratios, base):
        i = np.arange(n)
        pos = i * (TABLE / b) if ratio > 1 else np.floor(i * TABLE / n)
        omega, mscale = frequencies(HALF, 10000.0, float(TABLE), ratio, t, cfg)
        freqs.append(np.outer(pos, omega))
        scales.append(np.full(HALF // 2, mscale))
    rows, cols = freqs
    angles = np.concatenate([np.repeat(rows, w, axis=0), np.tile(cols, (h, 1))], axis=1)
    mscale = np.concatenate(scales)
    cos, sin = np.cos(angles) * mscale, np.sin(angles) * mscale
    return torch.from_numpy(np.concatenate([cos, cos], 1)), torch.from_numpy(np.concatenate([sin, sin], 1))


# -- identity and round trip ----------------------------------------------------------------------------------

@pytest.mark.parametrize("grid", [(8, 8), (6, 8), (3, 5)])
@pytest.mark.parametrize("method", ["yarn", "ntk", "pi"])
@pytest.mark.parametrize("aspect", ["per-axis", "isotropic"])
def test_at_or_below_base_grid_is_bit_exact(model, grid, method, aspect):
    x = cogview4_inputs(*grid, timestep=700.0)
    ref = run(model, **x)
    with dype_rope.patch(model, method=method, aspect=aspect):
        assert torch.equal(run(model, **x), ref)


def test_remove_restores_the_model_exactly(model):
    x = cogview4_inputs(16, 12, timestep=900.0)
    ref = run(model, **x)
    rope = model.rope
    before = dict(model.__dict__)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handle = dype_rope.patch(model)
    assert model.rope.rope_axes_dim == rope.rope_axes_dim and model.rope.dim == rope.dim
    assert not torch.equal(run(model, **x), ref)
    handle.remove()
    assert not dype_rope.is_patched(model) and model.rope is rope
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert model.__dict__.keys() == before.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(run(model, **x), ref)


# -- the tables the attention sees ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["yarn", "ntk", "pi"])
@pytest.mark.parametrize("t", [1.0, 0.3, 0.0])
@pytest.mark.parametrize("grid, aspect", [((16, 16), "per-axis"), ((6, 20), "per-axis"), ((6, 20), "isotropic")])
def test_tables_follow_the_schedule_on_cogview4s_positions(model, method, t, grid, aspect):
    x = cogview4_inputs(*grid, timestep=1000.0 * t)
    with dype_rope.patch(model, method=method, aspect=aspect):
        cos, sin = tables_seen(model, x)
    ref_cos, ref_sin = reference_tables(*grid, t, DyPEConfig(method=method), aspect)
    torch.testing.assert_close(cos.double(), ref_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin.double(), ref_sin, rtol=0, atol=1e-6)
    if t > 0:
        plain_cos, _ = reference_tables(*grid, t, DyPEConfig(method="none"))
        assert (cos.double() - plain_cos).abs().max() > 1e-3


@pytest.mark.parametrize("n", [16, 32])
def test_static_pi_is_the_models_own_interpolation(model, n):
    """Where TABLE / n is whole, the stock lookup has no rounding: static PI must give back the stock tables."""
    x = cogview4_inputs(n, n, timestep=500.0)
    stock_cos, stock_sin = tables_seen(model, x)
    with dype_rope.patch(model, method="pi", dynamic=False):
        cos, sin = tables_seen(model, x)
    torch.testing.assert_close(cos, stock_cos, rtol=0, atol=2e-5)
    torch.testing.assert_close(sin, stock_sin, rtol=0, atol=2e-5)


def test_default_base_grid_is_sample_size_over_patch_size(model):
    with dype_rope.patch(model) as handle:
        assert handle.base_grid == (BASE, BASE)


# -- diffusion time -------------------------------------------------------------------------------------------

def _cogview4_timesteps(steps: int = 28):
    """Timesteps as CogView4's pipeline sets them: its scheduler config, integer timesteps, shifted sigmas."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.cogview4.pipeline_cogview4 import calculate_shift, retrieve_timesteps

    scheduler = FlowMatchEulerDiscreteScheduler(
        base_shift=0.25, max_shift=0.75, base_image_seq_len=256, use_dynamic_shifting=True, time_shift_type="linear"
    )
    timesteps = np.linspace(1000, 1.0, steps).astype(np.int64).astype(np.float32)
    timesteps, _ = retrieve_timesteps(
        scheduler, steps, "cpu", timesteps, timesteps / 1000, mu=calculate_shift(16 * 16, 256, 0.25, 0.75)
    )
    return timesteps


def test_t_follows_cogview4s_own_pipeline_timesteps(model):
    timesteps = _cogview4_timesteps()
    seen = []
    with dype_rope.patch(model) as handle:
        hook = model.rope.register_forward_hook(lambda *a: seen.append(handle.adapter.step.t.item()))
        try:
            for timestep in timesteps:
                run(model, **cogview4_inputs(16, 16) | {"timestep": timestep.expand(1)})
        finally:
            hook.remove()
    assert seen == pytest.approx((timesteps.double() / 1000).tolist(), rel=0, abs=1e-12)
    assert seen[0] == 1.0 and seen[-1] < 0.01
    assert all(a > b for a, b in zip(seen, seen[1:]))


# -- compile and large grids ----------------------------------------------------------------------------------

def test_compiles_into_one_graph_over_28_steps(model):
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    with dype_rope.patch(model):
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for timestep in _cogview4_timesteps():
            x = cogview4_inputs(16, 16) | {"timestep": timestep.expand(1)}
            with torch.no_grad():
                got = compiled(**x).sample
        assert counter.frame_count == 1
        torch.testing.assert_close(got, run(model, **x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("factor", [4, 6])
def test_forward_at_and_past_the_table_stays_finite(model, factor):
    n = factor * BASE  # 4x fills the 32-entry table at spacing 1; 6x runs past it
    with dype_rope.patch(model):
        out = run(model, **cogview4_inputs(n, n, timestep=950.0))
    assert out.shape == (1, TINY_COGVIEW4["out_channels"], 2 * n, 2 * n)
    assert torch.isfinite(out).all()


# -- bad input ------------------------------------------------------------------------------------------------

def test_embedding_refuses_calls_outside_the_model(model):
    with dype_rope.patch(model):
        with pytest.raises(RuntimeError, match="outside the model"):
            model.rope(torch.zeros(1, 4, 32, 32))
