"""FLUX.2 adapter: Flux2Transformer2DModel with its four-axis (T, H, W, L) Flux2PosEmbed, theta 2000."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import dype_rope
from adapter_checks import (
    STEPS,
    TimeRecorder,
    assert_same_state,
    check_t_follows_sampler,
    reference_angles,
    sampler_timesteps,
    state_of,
)
from tiny_flux2 import FLUX2_SCHEDULER, flux2_ids, flux2_inputs, flux2_txt_ids, tiny_flux2

BASE = (4, 6)


@pytest.fixture
def model():
    return tiny_flux2()


def run(model, *args, **kwargs):
    return model(**flux2_inputs(*args, **kwargs)).sample


def test_detected_with_native_base_grid(model):
    with dype_rope.patch(model) as handle:
        assert handle.adapter.name == "flux2"
        assert handle.base_grid == (64, 64)  # 1024 px
        assert type(model.pos_embed).__name__ == "DyPEFlux2PosEmbed"
        assert model.pos_embed.theta == 2000 and list(model.pos_embed.axes_dim) == [8, 8, 8, 8]


@pytest.mark.parametrize("grid", [BASE, (3, 5), (4, 2)])
def test_identity_at_or_below_base_grid(model, grid):
    ref = [run(model, *grid, t) for t in (1.0, 0.4)]
    with dype_rope.patch(model, base_grid=BASE):
        got = [run(model, *grid, t) for t in (1.0, 0.4)]
    for r, g in zip(ref, got):
        assert torch.equal(r, g)


def test_tables_follow_the_core_schedule_on_rows_and_columns_only(model):
    h, w, t = 8, 9, 0.7
    seen = []
    with dype_rope.patch(model, base_grid=BASE) as handle:
        hook = model.pos_embed.register_forward_hook(lambda m, a, out: seen.append((a[0], out)))
        run(model, h, w, t, cond=(3, 3))  # a reference image on T = 10 must not change the scale
        hook.remove()
        assert handle.adapter.step.plan is None  # the step context is cleared when the call returns
    (img_ids, (img_cos, img_sin)), (txt_ids, (txt_cos, txt_sin)) = seen
    expected_ids = torch.cat([flux2_ids(h, w), flux2_ids(3, 3, frame=10)])
    assert torch.equal(img_ids, expected_ids) and torch.equal(txt_ids, flux2_txt_ids(5))
    for ids, cos, sin in ((img_ids, img_cos, img_sin), (txt_ids, txt_cos, txt_sin)):
        angles, mscale = reference_angles(ids, (8, 8, 8, 8), 2000.0, [1.0, h / 4, w / 6, 1.0], t, (1.0, *BASE, 1.0))
        torch.testing.assert_close(cos.double(), (angles.cos() * mscale).repeat_interleave(2, -1), atol=2e-7, rtol=0)
        torch.testing.assert_close(sin.double(), (angles.sin() * mscale).repeat_interleave(2, -1), atol=2e-7, rtol=0)
    # T and L are never rescaled: their channels are the stock tables bit for bit.
    stock = tiny_flux2().pos_embed
    for ids, cos, sin in ((img_ids, img_cos, img_sin), (txt_ids, txt_cos, txt_sin)):
        stock_cos, stock_sin = stock(ids)
        for part in (slice(0, 8), slice(24, 32)):
            assert torch.equal(cos[:, part], stock_cos[:, part]) and torch.equal(sin[:, part], stock_sin[:, part])


def test_t_follows_the_flux2_scheduler(model):
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    h, w = 4, 6
    # The shift the pipeline would use at 1024 px (4096 tokens); the tiny model only sees the timesteps.
    timesteps, sigmas = sampler_timesteps(FLUX2_SCHEDULER, 4096, mu=compute_empirical_mu(4096, STEPS))
    with dype_rope.patch(model, base_grid=(2, 3)) as handle:
        rec = TimeRecorder(handle.adapter, model.transformer_blocks[0])
        for ts in timesteps:
            run(model, h, w, float(ts / 1000))  # the pipeline passes timestep / 1000
        rec.close()
    check_t_follows_sampler(rec.seen, sigmas)


def test_one_graph_over_28_steps(model):
    timesteps, _ = sampler_timesteps(FLUX2_SCHEDULER, 4096, mu=2.0)
    with dype_rope.patch(model, base_grid=(2, 3)):
        eager = run(model, 4, 6, float(timesteps[-1] / 1000))
        torch._dynamo.reset()
        counter = CompileCounter()
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for ts in timesteps:
            out = compiled(**flux2_inputs(4, 6, float(ts / 1000))).sample
        assert counter.frame_count == 1
        torch.testing.assert_close(out, eager)
    torch._dynamo.reset()


def test_remove_restores_bit_for_bit(model):
    before, original = state_of(model), model.pos_embed
    ref = run(model, 8, 12, 0.6)
    handle = dype_rope.patch(model, base_grid=BASE)
    assert [n for n, _ in model.named_modules()] == before["names"]  # "pos_embed" keeps its name
    assert not torch.equal(run(model, 8, 12, 0.6), ref)
    handle.remove()
    assert model.pos_embed is original and not dype_rope.is_patched(model)
    assert_same_state(before, state_of(model))
    assert torch.equal(run(model, 8, 12, 0.6), ref)


def test_four_times_the_base_grid_stays_finite(model):
    with dype_rope.patch(model, base_grid=(2, 3)):
        out = run(model, 8, 12, 1.0)
    assert torch.isfinite(out).all()
