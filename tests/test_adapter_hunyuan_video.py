"""dype_rope.patch() on diffusers' HunyuanVideo: identity, scheduler time, one compiled graph, round trip,
the tables (theta 256, float32 angles as the stock module computes them)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoRotaryPosEmbed

import dype_rope
from dype_rope import DyPEConfig, build_plan, rope_tables
from tiny_video import (
    TINY_HUNYUAN_VIDEO,
    hunyuan_video_inputs,
    hunyuan_video_scheduler,
    tiny_hunyuan_video,
    video_positions,
)

F64 = torch.float64
AXES = TINY_HUNYUAN_VIDEO["rope_axes_dim"]
# The model turns positions by float32 angles: |angle| <= 24 positions x 1 rad, rounded at 2**-24 relative.
ANGLE_TOL = 24 * 2.0**-23


@pytest.fixture(scope="module")
def model():
    return tiny_hunyuan_video()


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
    plan = build_plan(AXES, 256.0, torch.tensor(scales, dtype=F64), torch.tensor(t, dtype=F64), cfg, base_lens)
    return rope_tables(video_positions(*grid), plan, "interleaved")


# -- identity and round trip ----------------------------------------------------------------------------------

@pytest.mark.parametrize("grid, base", [((3, 4, 6), (4, 6)), ((2, 3, 5), (4, 6)), ((5, 4, 6), (5, 4, 6))])
@pytest.mark.parametrize("method", ["yarn", "ntk", "pi"])
def test_at_or_below_base_grid_is_bit_exact(model, grid, base, method):
    x = hunyuan_video_inputs(*grid, timestep=800)
    stock = model.rope(x["hidden_states"])
    ref = run(model, **x)
    with dype_rope.patch(model, method=method, base_grid=base):
        (cos, sin), _ = capture(model, x)
        assert torch.equal(run(model, **x), ref)
    assert torch.equal(cos, stock[0]) and torch.equal(sin, stock[1])


def test_method_none_is_bit_exact_beyond_base(model):
    x = hunyuan_video_inputs(3, 8, 10, timestep=600)
    ref = run(model, **x)
    with dype_rope.patch(model, method="none", base_grid=(4, 4)):
        assert torch.equal(run(model, **x), ref)


def test_remove_restores_the_model_exactly(model):
    x = hunyuan_video_inputs(2, 8, 10, timestep=900)
    ref = run(model, **x)
    before = dict(model.__dict__)
    rope = model.rope
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handle = dype_rope.patch(model, base_grid=(4, 4))
    replacement = model.rope
    assert (replacement.theta, list(replacement.rope_dim), replacement.patch_size) == (256.0, list(AXES), 1)
    assert not torch.equal(run(model, **x), ref)
    handle.remove()
    assert model.rope is rope and isinstance(rope, HunyuanVideoRotaryPosEmbed)
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert model.__dict__.keys() == before.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(run(model, **x), ref)


# -- beyond the base grid --------------------------------------------------------------------------------------

def test_forward_beyond_base_is_finite_and_changes_the_output(model):
    x = hunyuan_video_inputs(2, 12, 14, timestep=1000)
    ref = run(model, **x)
    with dype_rope.patch(model, base_grid=(4, 4)):
        out = run(model, **x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert not torch.equal(out, ref)


@pytest.mark.parametrize("aspect", ["per-axis", "isotropic"])
@pytest.mark.parametrize("timestep, method", [(1000, "yarn"), (370, "yarn"), (0, "yarn"), (500, "ntk"), (500, "pi")])
def test_tables_follow_the_schedule_on_the_video_grid(model, aspect, timestep, method):
    grid, base = (3, 18, 24), (6, 8)
    with dype_rope.patch(model, method=method, base_grid=base, aspect=aspect):
        (cos, sin), _ = capture(model, hunyuan_video_inputs(*grid, timestep=timestep))
    sh, sw = 18 / 6, 24 / 8
    if aspect == "isotropic":
        sh = sw = max(sh, sw)
    cfg = DyPEConfig(method=method)
    ref_cos, ref_sin = reference_tables(grid, [1.0, sh, sw], timestep / 1000, (1.0, 6.0, 8.0), cfg)
    assert cos.shape == (3 * 18 * 24, sum(AXES)) and cos.dtype == torch.float32
    torch.testing.assert_close(cos.double(), ref_cos.double(), rtol=0, atol=ANGLE_TOL)
    torch.testing.assert_close(sin.double(), ref_sin.double(), rtol=0, atol=ANGLE_TOL)
    plain_cos, _ = reference_tables(grid, [1.0, 1.0, 1.0], 0.0, (1.0, 6.0, 8.0))
    assert (cos.double() - plain_cos.double()).abs().max() > 100 * ANGLE_TOL  # a real change, not noise


def test_frames_keep_plain_rope_unless_a_frame_base_is_given(model):
    grid = (12, 3, 4)
    x = hunyuan_video_inputs(*grid, timestep=700)
    ref = run(model, **x)
    with dype_rope.patch(model, base_grid=(3, 4)):
        assert torch.equal(run(model, **x), ref)
    with dype_rope.patch(model, base_grid=(4, 3, 4)) as handle:
        (cos, sin), _ = capture(model, x)
        assert handle.adapter.rescaled_axes == (0, 1, 2)
    stock_cos, _ = model.rope(x["hidden_states"])
    ref_cos, ref_sin = reference_tables(grid, [3.0, 1.0, 1.0], 0.7, (4.0, 3.0, 4.0))
    torch.testing.assert_close(cos.double(), ref_cos.double(), rtol=0, atol=ANGLE_TOL)
    frames = AXES[0]
    assert (cos[:, :frames] - stock_cos[:, :frames]).abs().max() > 1e-3  # the frame channels moved
    assert torch.equal(cos[:, frames:], stock_cos[:, frames:])  # and only they did


# -- the diffusion time ----------------------------------------------------------------------------------------

def test_t_follows_the_hunyuan_video_scheduler_from_noise_to_data(model):
    scheduler = hunyuan_video_scheduler()
    scheduler.set_timesteps(50)  # HunyuanVideoPipeline's default
    ts = []
    with dype_rope.patch(model, base_grid=(4, 4)) as handle:
        for step in scheduler.timesteps:
            x = hunyuan_video_inputs(1, 4, 4)
            x["timestep"] = step.expand(1).to(torch.float32)  # as HunyuanVideoPipeline passes it
            _, t = capture(model, x, handle)
            ts.append(t)
    ts = torch.stack(ts)
    sigmas = scheduler.sigmas[:-1].double()
    torch.testing.assert_close(ts, sigmas, rtol=0, atol=1e-5)
    assert ts[0] == 1.0 and ts[-1] < 0.1 and (ts.diff() < 0).all()


# -- compile ---------------------------------------------------------------------------------------------------

def test_compiles_into_one_graph_over_the_sampling_steps(model):
    scheduler = hunyuan_video_scheduler()
    scheduler.set_timesteps(8)
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    with dype_rope.patch(model, base_grid=(4, 4)):
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for step in scheduler.timesteps:
            x = hunyuan_video_inputs(2, 6, 8)
            x["timestep"] = step.expand(1)
            with torch.no_grad():
                got = compiled(**x)[0]
        assert counter.frame_count == 1
        torch.testing.assert_close(got, run(model, **x), rtol=1e-6, atol=1e-6)


# -- defaults and bad input ------------------------------------------------------------------------------------

def test_default_base_grid_is_720p(model):
    with dype_rope.patch(model) as handle:
        assert handle.base_grid == (45, 80) and handle.adapter.name == "hunyuan_video"
    with dype_rope.patch(model, base_resolution=(544, 960)) as handle:
        assert handle.base_grid == (34, 60)


def test_bad_base_grid_is_named(model):
    with pytest.raises(ValueError, match=r"base_grid=\(rows, columns\) or \(frames, rows, columns\)"):
        dype_rope.patch(model, base_grid=(2, 3, 4, 5))
    assert not dype_rope.is_patched(model) and not model._forward_pre_hooks


def test_axes_that_do_not_fill_the_head_are_named():
    m = tiny_hunyuan_video()
    m.rope.rope_dim = [4, 6, 8]
    original = m.rope
    with pytest.raises(ValueError, match="sum to 18, but the attention head dim is 16"):
        dype_rope.patch(m)
    assert m.rope is original and not m._forward_pre_hooks and not dype_rope.is_patched(m)
