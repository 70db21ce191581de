"""Generic EmbedND adapter: BFL / ComfyUI-style rotation-matrix encodings, found by name or pointed at with
patch(model, module=...), timestep read from the model's forward argument."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounter

import dype_rope
from adapter_checks import (
    TimeRecorder,
    assert_same_state,
    check_t_follows_sampler,
    reference_angles,
    sampler_timesteps,
    state_of,
)
from dype_rope.adapters.embednd import EmbedNDAdapter
from tiny_embednd import EmbedND, TinyEmbedNDDiT, embednd_inputs, tiny_embednd

BASE = (4, 6)
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, max_image_seq_len=4096)


@pytest.fixture
def model():
    return tiny_embednd()


def run(model, *args, **kwargs):
    return model(**embednd_inputs(*args, **kwargs))


def matrices_of(model, *args, **kwargs):
    seen = []
    hook = model.pe_embedder.register_forward_hook(lambda m, a, out: seen.append((a[0], out)))
    run(model, *args, **kwargs)
    hook.remove()
    return seen[0]


def reference_matrices(ids, scales, t):
    angles, mscale = reference_angles(ids, (8, 12, 12), 10000.0, scales, t, (1.0, *BASE))
    c, s = angles.cos() * mscale, angles.sin() * mscale
    return torch.stack([c, -s, s, c], dim=-1).unflatten(-1, (2, 2))


def test_found_by_name_and_keeps_attributes(model):
    with dype_rope.patch(model) as handle:
        assert handle.adapter.name == "embednd" and handle.base_grid == (64, 64)
        assert model.pe_embedder.theta == 10000.0 and model.pe_embedder.axes_dim == [8, 12, 12]
        assert model.pe_embedder.dim == 32


def test_any_module_pointed_at(model):
    class Rope(EmbedND):  # another name: not found by itself, fine when pointed at
        pass

    model.pe_embedder = Rope(32, 10000.0, [8, 12, 12])
    with pytest.raises(TypeError, match="no adapter"):
        dype_rope.patch(model)
    ref, ref_big = run(model, 4, 6, 0.5), run(model, 8, 12, 0.5)
    with dype_rope.patch(model, module=model.pe_embedder, base_grid=BASE) as handle:
        assert handle.adapter.name == "embednd"
        assert torch.equal(run(model, 4, 6, 0.5), ref)
        assert not torch.equal(run(model, 8, 12, 0.5), ref_big)


@pytest.mark.parametrize("grid", [BASE, (3, 5)])
def test_identity_at_or_below_base_grid(model, grid):
    ref = [run(model, *grid, t, cond=(5, 5)) for t in (1.0, 0.3)]
    stock = matrices_of(model, *grid, 1.0)[1]
    with dype_rope.patch(model, base_grid=BASE):
        got = [run(model, *grid, t, cond=(5, 5)) for t in (1.0, 0.3)]
        patched = matrices_of(model, *grid, 1.0)[1]
    for r, g in zip(ref, got):
        assert torch.equal(r, g)
    assert patched.shape == stock.shape and patched.dtype == stock.dtype and torch.equal(patched, stock)


def test_tables_follow_the_core_schedule(model):
    h, w, t = 8, 9, 0.65
    with dype_rope.patch(model, base_grid=BASE):
        ids, table = matrices_of(model, h, w, t, cond=(12, 12))  # the frame-1 image must not set the scale
    assert table.shape == (1, 1, len(ids[0]), 16, 2, 2)
    ref = reference_matrices(ids[0], [1.0, h / 4, w / 6], t)
    torch.testing.assert_close(table[0, 0].double(), ref, atol=2e-7, rtol=0)


def test_t_follows_a_flux_scheduler(model):
    timesteps, sigmas = sampler_timesteps(FLUX_SCHEDULER, 4096)
    with dype_rope.patch(model, base_grid=(2, 3)) as handle:
        rec = TimeRecorder(handle.adapter, model.qkv)
        for ts in timesteps:
            run(model, 4, 6, float(ts / 1000))  # BFL's sampler passes sigma = timestep / 1000
        rec.close()
    check_t_follows_sampler(rec.seen, sigmas)


def test_time_argument_and_direction_are_configurable():
    class Reversed(TinyEmbedNDDiT):
        def forward(self, img, img_ids, txt, txt_ids, tau):  # tau: 0 = noise, 1000 = data
            return super().forward(img, img_ids, txt, txt_ids, 1 - tau / 1000)

    model = Reversed().eval()
    inputs = embednd_inputs(4, 6)
    inputs["tau"] = torch.full((1,), 250.0)
    del inputs["timesteps"]
    with pytest.raises(TypeError, match="timestep arguments"):
        dype_rope.patch(model)

    @dype_rope.register_adapter(Reversed)
    class ReversedAdapter(EmbedNDAdapter):
        time_arguments = ("tau",)
        time_divide_by = 1000.0
        time_reversed = True

    with dype_rope.patch(model, base_grid=(2, 3)) as handle:
        seen = []
        hook = model.qkv.register_forward_pre_hook(lambda m, a: seen.append(float(handle.adapter.step.t)))
        model(**inputs)
        hook.remove()
    assert seen == [0.75]


def test_modules_of_another_format_are_refused_clearly(model):
    class CosSin(nn.Module):
        theta, axes_dim = 10000.0, [8, 12, 12]

        def forward(self, ids):
            return ids.cos(), ids.sin()

    model.pe_embedder = CosSin()
    with pytest.raises(TypeError, match="rotation matrices.*register an adapter"):
        dype_rope.patch(model, module=model.pe_embedder)
    assert isinstance(model.pe_embedder, CosSin) and not dype_rope.is_patched(model)


def test_one_graph_over_28_steps(model):
    timesteps, _ = sampler_timesteps(FLUX_SCHEDULER, 4096)
    with dype_rope.patch(model, base_grid=(2, 3)):
        eager = run(model, 4, 6, float(timesteps[-1] / 1000))
        torch._dynamo.reset()
        counter = CompileCounter()
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for ts in timesteps:
            out = compiled(**embednd_inputs(4, 6, float(ts / 1000)))
        assert counter.frame_count == 1
        torch.testing.assert_close(out, eager)
    torch._dynamo.reset()


def test_remove_restores_bit_for_bit(model):
    before, original = state_of(model), model.pe_embedder
    ref = run(model, 8, 12, 0.6)
    handle = dype_rope.patch(model, base_grid=BASE)
    assert [n for n, _ in model.named_modules()] == before["names"]
    assert not torch.equal(run(model, 8, 12, 0.6), ref)
    handle.remove()
    assert model.pe_embedder is original
    assert_same_state(before, state_of(model))
    assert torch.equal(run(model, 8, 12, 0.6), ref)


def test_four_times_the_base_grid_stays_finite(model):
    with dype_rope.patch(model, base_grid=(2, 3)):
        out = run(model, 8, 12, 1.0)
    assert torch.isfinite(out).all()
