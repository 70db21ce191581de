"""dype_rope.patch() on HiDream-I1: identity, rotation matrices against a float64 reference of the schedules on
HiDream's ids, t from HiDream's own schedulers, compile, round trip, a forward at 4x the base grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch._dynamo.testing

import dype_rope
from dype_rope import DyPEConfig
from reference_dype import frequencies
from tiny_hidream import TINY_HIDREAM, hidream_inputs, tiny_hidream

BASE = TINY_HIDREAM["max_resolution"][0] // TINY_HIDREAM["patch_size"]  # 8 tokens
AXES = TINY_HIDREAM["axes_dims_rope"]


@pytest.fixture(scope="module")
def model():
    return tiny_hidream()


def run(m, **inputs):
    with torch.no_grad():
        return m(**inputs).sample


def matrices_seen(m, inputs):
    seen = []
    hook = m.pe_embedder.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
    try:
        run(m, **inputs)
    finally:
        hook.remove()
    return seen[0]


def reference_matrices(ids, h: int, w: int, t: float, cfg: DyPEConfig, aspect="per-axis", base=(BASE, BASE)):
    """[[cos, -sin], [sin, cos]] * mscale per interleaved pair, axes (frame, rows, columns) in that order."""
    ratios = [1.0, h / base[0], w / base[1]]
    if aspect == "isotropic":
        ratios[1:] = [max(ratios[1:])] * 2
    pos = ids[0].double().numpy()
    blocks = []
    for axis, (dim, ratio, b) in enumerate(zip(AXES, ratios, (1.0, *base))):
        omega, mscale = frequencies(dim, 10000.0, b, ratio, t, cfg)
        angles = np.outer(pos[:, axis], omega)
        c, s = np.cos(angles) * mscale, np.sin(angles) * mscale
        blocks.append(np.stack([c, -s, s, c], -1).reshape(len(pos), dim // 2, 2, 2))
    return torch.from_numpy(np.concatenate(blocks, axis=1))[None, :, None]


# -- identity and round trip ----------------------------------------------------------------------------------

@pytest.mark.parametrize("grid", [(8, 8), (6, 8), (4, 4)])
@pytest.mark.parametrize("method", ["yarn", "ntk", "pi"])
def test_at_or_below_base_grid_is_bit_exact(model, grid, method):
    x = hidream_inputs(*grid, timestep=700.0)
    ref = run(model, **x)
    with dype_rope.patch(model, method=method):
        assert torch.equal(run(model, **x), ref)


def test_method_none_is_bit_exact_beyond_base(model):
    x = hidream_inputs(16, 16, timestep=400.0)
    ref = run(model, **x)
    with dype_rope.patch(model, method="none"):
        assert torch.equal(run(model, **x), ref)


def test_remove_restores_the_model_exactly(model):
    x = hidream_inputs(16, 16, timestep=900.0)
    ref = run(model, **x)
    embedder = model.pe_embedder
    before = dict(model.__dict__)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handle = dype_rope.patch(model)
    assert type(model.pe_embedder).__name__ == "DyPEHiDreamEmbedND" and model.pe_embedder.theta == embedder.theta
    assert not torch.equal(run(model, **x), ref)
    handle.remove()
    assert not dype_rope.is_patched(model) and model.pe_embedder is embedder
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert model.__dict__.keys() == before.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(run(model, **x), ref)


# -- the matrices the attention sees --------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["yarn", "ntk", "pi"])
@pytest.mark.parametrize("t", [1.0, 0.3, 0.0])
@pytest.mark.parametrize("aspect", ["per-axis", "isotropic"])
def test_matrices_follow_the_schedule_on_hidreams_ids(model, method, t, aspect):
    h, w = 16, 16  # non-square grids beyond max_resolution do not fit HiDream's padding
    x = hidream_inputs(h, w, timestep=1000.0 * t)
    with dype_rope.patch(model, method=method, aspect=aspect, base_grid=(8, 4)):
        ids, got = matrices_seen(model, x)
    assert got.shape == (1, h * w + 3 * 3, 1, sum(AXES) // 2, 2, 2) and got.dtype == torch.float32
    ref = reference_matrices(ids, h, w, t, DyPEConfig(method=method), aspect, base=(8, 4))
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-6)
    if t > 0:
        plain = reference_matrices(ids, h, w, t, DyPEConfig(method="none"))
        assert (got.double() - plain).abs().max() > 1e-3


def test_default_base_grid_is_max_resolution_over_patch_size(model):
    with dype_rope.patch(model) as handle:
        assert handle.base_grid == (BASE, BASE)


# -- diffusion time -------------------------------------------------------------------------------------------

def _hidream_schedulers():
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
    from diffusers.pipelines.hidream_image.pipeline_hidream_image import calculate_shift

    euler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    euler.set_timesteps(28, mu=calculate_shift(64 * 64))  # the pipeline's mu for a max_seq of 4096 tokens
    unipc = UniPCMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction")
    unipc.set_timesteps(28)
    return {"flow-match-euler": euler, "unipc-flow": unipc}


@pytest.mark.parametrize("name", ["flow-match-euler", "unipc-flow"])
def test_t_follows_hidreams_own_schedulers(model, name):
    scheduler = _hidream_schedulers()[name]
    seen = []
    with dype_rope.patch(model) as handle:
        hook = model.pe_embedder.register_forward_hook(lambda *a: seen.append(handle.adapter.step.t.item()))
        try:
            for timestep in scheduler.timesteps:
                run(model, **hidream_inputs(8, 8) | {"timesteps": timestep.expand(1)})
        finally:
            hook.remove()
    assert seen == pytest.approx((scheduler.timesteps.double() / 1000).tolist(), rel=0, abs=1e-12)
    assert seen[0] >= 0.999 and seen[-1] < 0.15
    assert all(a > b for a, b in zip(seen, seen[1:]))


# -- compile and large grids ----------------------------------------------------------------------------------

def test_compiles_into_one_graph_over_28_steps(model):
    scheduler = _hidream_schedulers()["flow-match-euler"]
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    with dype_rope.patch(model):
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for timestep in scheduler.timesteps:
            x = hidream_inputs(16, 16) | {"timesteps": timestep.expand(1)}
            with torch.no_grad():
                got = compiled(**x).sample
        assert counter.frame_count == 1
        torch.testing.assert_close(got, run(model, **x), rtol=1e-6, atol=1e-6)


def test_forward_at_4x_the_base_grid_stays_finite(model):
    with dype_rope.patch(model):
        out = run(model, **hidream_inputs(4 * BASE, 4 * BASE, timestep=950.0))
    assert out.shape == (1, TINY_HIDREAM["out_channels"], 8 * BASE, 8 * BASE)
    assert torch.isfinite(out).all()


# -- bad input ------------------------------------------------------------------------------------------------

def test_wrong_number_of_axes_is_named_and_leaves_the_model_untouched():
    m = tiny_hidream(axes_dims_rope=(4, 4), attention_head_dim=8)
    embedder = m.pe_embedder
    with pytest.raises(ValueError, match="3 RoPE axes"):
        dype_rope.patch(m)
    assert m.pe_embedder is embedder and not dype_rope.is_patched(m)
    assert not m._forward_pre_hooks and not m._forward_hooks


def test_embedding_refuses_calls_outside_the_model(model):
    with dype_rope.patch(model):
        with pytest.raises(RuntimeError, match="outside the model"):
            model.pe_embedder(torch.zeros(1, 4, 3))
