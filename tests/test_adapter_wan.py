"""dype_rope.patch() on diffusers' Wan: identity, scheduler time, one compiled graph, round trip, the tables."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

import dype_rope
from dype_rope import DyPEConfig, build_plan, rope_tables
from dype_rope.adapters.wan import WanAdapter
from tiny_video import TINY_WAN, tiny_wan, video_positions, wan_inputs, wan_scheduler

F64 = torch.float64
AXES = (6, 6, 6)  # TINY_WAN's head dim 18, split as WanRotaryPosEmbed does


@pytest.fixture(scope="module")
def model():
    return tiny_wan()


def run(m, **inputs):
    with torch.no_grad():
        return m(**inputs)[0]


def capture(m, inputs, handle=None):
    """The rope module's (cos, sin) in one call, and the step's diffusion time t if a handle is given."""
    seen = []

    def record(mod, args, out):
        seen.append((out, None if handle is None else handle.adapter.step.t))

    h = m.rope.register_forward_hook(record)
    try:
        run(m, **inputs)
    finally:
        h.remove()
    return seen[0]


def reference_tables(grid, scales, t, base_lens, cfg=DyPEConfig()):
    """Float64 tables of the core schedule on every (frame, row, column) of the grid, frames-major."""
    plan = build_plan(AXES, 10000.0, torch.tensor(scales, dtype=F64), torch.tensor(t, dtype=F64), cfg, base_lens)
    return rope_tables(video_positions(*grid), plan, "interleaved")


# -- identity and round trip ----------------------------------------------------------------------------------

@pytest.mark.parametrize("grid, base", [((3, 4, 6), (4, 6)), ((2, 3, 5), (4, 6)), ((5, 4, 6), (5, 4, 6))])
@pytest.mark.parametrize("method", ["yarn", "ntk", "pi"])
def test_at_or_below_base_grid_is_bit_exact(model, grid, base, method):
    x = wan_inputs(*grid, timestep=800)
    ref = run(model, **x)
    with dype_rope.patch(model, method=method, base_grid=base):
        assert torch.equal(run(model, **x), ref)


def test_method_none_is_bit_exact_beyond_base(model):
    x = wan_inputs(3, 8, 10, timestep=600)
    ref = run(model, **x)
    with dype_rope.patch(model, method="none", base_grid=(4, 4)):
        assert torch.equal(run(model, **x), ref)


def test_remove_restores_the_model_exactly(model):
    x = wan_inputs(2, 8, 10, timestep=900)
    ref = run(model, **x)
    before = dict(model.__dict__)
    rope = model.rope
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handle = dype_rope.patch(model, base_grid=(4, 4))
    assert type(model.rope).__name__ == "DyPEWanRotaryPosEmbed"
    assert "rope" in model._keep_in_fp32_modules and dict(model.named_children())["rope"] is model.rope
    assert not torch.equal(run(model, **x), ref)
    handle.remove()
    assert model.rope is rope and isinstance(rope, WanRotaryPosEmbed)
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert model.__dict__.keys() == before.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(run(model, **x), ref)


# -- beyond the base grid --------------------------------------------------------------------------------------

def test_forward_beyond_base_is_finite_and_changes_the_output(model):
    x = wan_inputs(2, 12, 14, timestep=999)
    ref = run(model, **x)
    with dype_rope.patch(model, base_grid=(4, 4)):
        out = run(model, **x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert not torch.equal(out, ref)


@pytest.mark.parametrize("aspect", ["per-axis", "isotropic"])
@pytest.mark.parametrize("timestep, method", [(999, "yarn"), (370, "yarn"), (0, "yarn"), (500, "ntk"), (500, "pi")])
def test_tables_follow_the_schedule_on_the_video_grid(model, aspect, timestep, method):
    grid, base = (3, 9, 14), (4, 7)
    with dype_rope.patch(model, method=method, base_grid=base, aspect=aspect):
        (cos, sin), _ = capture(model, wan_inputs(*grid, timestep=timestep))
    sh, sw = 9 / 4, 14 / 7
    if aspect == "isotropic":
        sh = sw = max(sh, sw)
    cfg = DyPEConfig(method=method)
    ref_cos, ref_sin = reference_tables(grid, [1.0, sh, sw], timestep / 1000, (1.0, 4.0, 7.0), cfg)
    assert cos.shape == (1, 3 * 9 * 14, 1, sum(AXES)) and cos.dtype == torch.float32
    assert torch.equal(cos[0, :, 0], ref_cos) and torch.equal(sin[0, :, 0], ref_sin)


def test_frames_keep_plain_rope_unless_a_frame_base_is_given(model):
    grid = (12, 3, 4)  # more frames than the 4 of the base, a spatial grid inside it
    x = wan_inputs(*grid, timestep=700)
    ref = run(model, **x)
    with dype_rope.patch(model, base_grid=(3, 4)):
        assert torch.equal(run(model, **x), ref)
    with dype_rope.patch(model, base_grid=(4, 3, 4)) as handle:
        (cos, sin), _ = capture(model, x)
        assert handle.adapter.rescaled_axes == (0, 1, 2)
    ref_cos, ref_sin = reference_tables(grid, [3.0, 1.0, 1.0], 0.7, (4.0, 3.0, 4.0))
    assert torch.equal(cos[0, :, 0], ref_cos) and torch.equal(sin[0, :, 0], ref_sin)
    plain_cos, _ = reference_tables(grid, [1.0, 1.0, 1.0], 0.7, (4.0, 3.0, 4.0))
    frames = slice(0, AXES[0])
    assert not torch.equal(cos[0, :, 0, frames], plain_cos[:, frames])  # the frame channels really moved
    assert torch.equal(cos[0, :, 0, AXES[0]:], plain_cos[:, AXES[0]:])  # and only they did


def test_isotropic_does_not_mix_frames_into_the_spatial_ratio(model):
    scales = []
    with dype_rope.patch(model, base_grid=(2, 3, 4), aspect="isotropic") as handle:
        h = model.rope.register_forward_hook(lambda *a: scales.append(handle.adapter.step.scales.clone()))
        run(model, **wan_inputs(12, 6, 4, timestep=500))
        h.remove()
    # frames: 12 / 2 = 6 of their own; rows 6 / 3 = 2 and columns 4 / 4 = 1 share the larger, 2
    assert scales[0].tolist() == [6.0, 2.0, 2.0]


# -- the diffusion time ----------------------------------------------------------------------------------------

def test_t_follows_the_wan_scheduler_from_noise_to_data(model):
    scheduler = wan_scheduler()
    scheduler.set_timesteps(50)  # WanPipeline's default
    ts = []
    with dype_rope.patch(model, base_grid=(4, 4)) as handle:
        for step in scheduler.timesteps:
            x = wan_inputs(2, 6, 6)
            x["timestep"] = step.expand(1)  # as WanPipeline passes it
            _, t = capture(model, x, handle)
            ts.append(t)
    ts = torch.stack(ts)
    sigmas = scheduler.sigmas[:-1].double()  # the noise level of each step, from the scheduler itself
    torch.testing.assert_close(ts, sigmas, rtol=0, atol=1e-3)
    assert ts[0] >= 0.999 and ts[-1] < 0.1 and (ts.diff() < 0).all()


def test_per_token_timesteps_take_the_generated_tokens_noise_level(model):
    grid = (3, 6, 8)
    x = wan_inputs(*grid)
    per_token = torch.full((1, 3 * 6 * 8), 640.0)
    per_token[:, : 6 * 8] = 0.0  # Wan 2.2 TI2V: the conditioning first frame is clean
    with dype_rope.patch(model, base_grid=(4, 4)) as handle:
        (cos, _), t = capture(model, {**x, "timestep": per_token}, handle)
        (cos_uniform, _), _ = capture(model, {**x, "timestep": torch.tensor([640.0])}, handle)
    assert t.item() == pytest.approx(0.64)
    assert torch.equal(cos, cos_uniform)


# -- compile ---------------------------------------------------------------------------------------------------

def test_compiles_into_one_graph_over_the_sampling_steps(model):
    scheduler = wan_scheduler()
    scheduler.set_timesteps(8)
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    with dype_rope.patch(model, base_grid=(4, 4)):
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for step in scheduler.timesteps:
            x = wan_inputs(2, 6, 8)
            x["timestep"] = step.expand(1)
            with torch.no_grad():
                got = compiled(**x)[0]
        assert counter.frame_count == 1
        torch.testing.assert_close(got, run(model, **x), rtol=1e-6, atol=1e-6)


# -- defaults and bad input ------------------------------------------------------------------------------------

def test_default_base_grid_is_480p_and_base_resolution_converts(model):
    with dype_rope.patch(model) as handle:
        assert handle.base_grid == (30, 52) and handle.adapter.name == "wan"
    with dype_rope.patch(model, base_resolution=(720, 1280)) as handle:
        assert handle.base_grid == (45, 80)
    assert WanAdapter.rescaled_axes == (1, 2)  # a 3-entry grid changes only its own adapter


def test_wan22_5b_vae_gets_its_own_default_grid():
    m = tiny_wan(in_channels=48, out_channels=48)
    with dype_rope.patch(m) as handle:
        assert handle.base_grid == (22, 40)


@pytest.mark.parametrize("kwargs, message", [
    (dict(base_grid=(2, 3, 4, 5)), r"base_grid=\(rows, columns\) or \(frames, rows, columns\)"),
    (dict(base_grid=(0, 4, 4)), "base_grid must be positive"),
])
def test_bad_base_grid_is_named(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        dype_rope.patch(model, **kwargs)
    assert not dype_rope.is_patched(model) and not model._forward_pre_hooks


def test_a_four_dim_latent_is_refused(model):
    with dype_rope.patch(model, base_grid=(4, 4)):
        with pytest.raises(ValueError, match=r"\[batch, channels, frames, height, width\]"):
            model.rope(torch.zeros(1, 4, 8, 8))


def test_rope_called_outside_the_model_is_refused(model):
    with dype_rope.patch(model, base_grid=(4, 4)):
        with pytest.raises(RuntimeError, match="outside the model's forward"):
            model.rope(torch.zeros(1, TINY_WAN["in_channels"], 2, 4, 4))
