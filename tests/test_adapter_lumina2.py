"""Lumina2 adapter: complex128 tables on (caption index, row, column) positions, time running the other way
(0 = noise), base grid from the model's own sample_size."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import dype_rope
from adapter_checks import (
    TimeRecorder,
    assert_same_state,
    check_t_follows_sampler,
    reference_complex,
    sampler_timesteps,
    state_of,
)
from tiny_lumina2 import LUMINA2_SCHEDULER, lumina2_inputs, tiny_lumina2

AXES, THETA = (8, 12, 12), 10000.0
BASE = (4, 6)


@pytest.fixture
def model():
    return tiny_lumina2()


def run(model, *args, **kwargs):
    return model(**lumina2_inputs(*args, **kwargs)).sample


def joint_tables(model, *args, **kwargs):
    seen = []
    hook = model.rope_embedder.register_forward_hook(lambda m, a, out: seen.append(out[3]))
    run(model, *args, **kwargs)
    hook.remove()
    return seen[0]


def hand_positions(h, w, cap_len):
    """Lumina2's layout: caption k at (k, 0, 0), every image token at (cap_len, row, col)."""
    caption = [(k, 0, 0) for k in range(cap_len)]
    image = [(cap_len, r, c) for r in range(h) for c in range(w)]
    return torch.tensor(caption + image, dtype=torch.float64)


def test_base_grid_from_sample_size(model):
    with dype_rope.patch(model) as handle:
        assert handle.adapter.name == "lumina2"
        assert handle.base_grid == (8, 8)  # sample_size 16 latent px / patch 2
    with dype_rope.patch(tiny_lumina2(sample_size=128)) as handle:
        assert handle.base_grid == (64, 64)  # Lumina-Image-2.0's 1024 px


@pytest.mark.parametrize("grid", [BASE, (2, 5)])
def test_identity_at_or_below_base_grid(model, grid):
    ref = [run(model, *grid, t) for t in (0.0, 0.7)]
    stock = joint_tables(model, *grid, 0.0)
    with dype_rope.patch(model, base_grid=BASE):
        got = [run(model, *grid, t) for t in (0.0, 0.7)]
        patched = joint_tables(model, *grid, 0.0)
    for r, g in zip(ref, got):
        assert torch.equal(r, g)
    assert stock.dtype == patched.dtype == torch.complex128 and torch.equal(stock, patched)


def test_tables_follow_the_core_schedule_with_reversed_time(model):
    h, w, lumina_t = 8, 9, 0.25  # Lumina2's 0.25 is DyPE's t = 0.75
    with dype_rope.patch(model, base_grid=BASE):
        table = joint_tables(model, h, w, lumina_t)
    ref = reference_complex(hand_positions(h, w, 5), AXES, THETA, [1.0, h / 4, w / 6], 0.75, (1.0, *BASE))
    torch.testing.assert_close(table[0], ref, atol=1e-12, rtol=0)
    unreversed = reference_complex(hand_positions(h, w, 5), AXES, THETA, [1.0, h / 4, w / 6], 0.25, (1.0, *BASE))
    assert (ref - unreversed).abs().max() > 0.1  # the comparison above can tell t from 1 - t


def test_grids_beyond_the_stock_table_length(model):
    # axes_lens is 64: the stock embedding cannot index row 64; the DyPE tables are computed, not gathered.
    with dype_rope.patch(model, base_grid=(16, 16)):
        out = run(model, 72, 2, 0.0)
    assert torch.isfinite(out).all()


def test_t_follows_the_lumina2_scheduler(model):
    timesteps, sigmas = sampler_timesteps(LUMINA2_SCHEDULER, 4096)
    with dype_rope.patch(model, base_grid=(2, 3)) as handle:
        rec = TimeRecorder(handle.adapter, model.layers[0])
        for ts in timesteps:
            run(model, 4, 6, float(1 - ts / 1000))  # the pipeline passes 1 - t / num_train_timesteps
        rec.close()
    check_t_follows_sampler(rec.seen, sigmas)


def frames_over_steps(model, timesteps):
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    for ts in timesteps:
        compiled(**lumina2_inputs(4, 6, float(1 - ts / 1000)))
    torch._dynamo.reset()
    return counter.frame_count


def test_compiles_to_the_stock_graphs_over_28_steps(model):
    """Lumina2's own forward reads caption lengths on the host (`.tolist()`) and branches on them, so even the
    stock model cannot compile as one full graph; DyPE must add no graph and no recompilation to it."""
    timesteps, _ = sampler_timesteps(LUMINA2_SCHEDULER, 4096)
    stock = frames_over_steps(model, timesteps[:1])
    with dype_rope.patch(model, base_grid=(2, 3)):
        patched = frames_over_steps(model, timesteps)
    assert patched == stock


def test_the_dype_tables_alone_compile_as_one_full_graph(model):
    """The part DyPE adds reads nothing on the host: fullgraph=True holds for it over every step."""
    ids = hand_positions(4, 6, 5).to(torch.int32).unsqueeze(0)
    with dype_rope.patch(model, base_grid=(2, 3)) as handle:
        embedder, step = model.rope_embedder, handle.adapter.step
        torch._dynamo.reset()
        counter = CompileCounter()

        def tables(ids, timestep):
            step.timestep = timestep  # what the model's pre-hook stores
            return embedder._get_freqs_cis(ids)

        compiled = torch.compile(tables, backend=counter, fullgraph=True)
        for t in torch.linspace(0.0, 0.95, 28, dtype=torch.float64):
            out = compiled(ids, t.reshape(1))
        step.clear()
        torch._dynamo.reset()
    assert counter.frame_count == 1
    ref = reference_complex(ids[0], AXES, THETA, [1.0, 2.0, 2.0], 1 - 0.95, (1.0, 2, 3))
    torch.testing.assert_close(out[0], ref, atol=1e-12, rtol=0)


def test_remove_restores_bit_for_bit(model):
    before, original = state_of(model), model.rope_embedder
    ref = run(model, 8, 12, 0.4)
    handle = dype_rope.patch(model, base_grid=BASE)
    assert [n for n, _ in model.named_modules()] == before["names"]
    assert not torch.equal(run(model, 8, 12, 0.4), ref)
    handle.remove()
    assert model.rope_embedder is original
    assert_same_state(before, state_of(model))
    assert torch.equal(run(model, 8, 12, 0.4), ref)


def test_four_times_the_base_grid_stays_finite(model):
    with dype_rope.patch(model, base_grid=(2, 3)):
        out = run(model, 8, 12, 0.0)
    assert torch.isfinite(out).all()
