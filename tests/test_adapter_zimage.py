"""Z-Image adapter: a plain-object rope embedder (not an nn.Module), theta 256, complex64 tables from
float64 angles, time running the other way (0 = noise)."""

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
    reference_complex,
    sampler_timesteps,
    state_of,
)
from tiny_zimage import ZIMAGE_SCHEDULER, tiny_zimage, zimage_inputs, zimage_omni_inputs

AXES, THETA = (8, 12, 12), 256.0
BASE = (4, 6)


@pytest.fixture
def model():
    return tiny_zimage()


def run(model, *args, **kwargs):
    return torch.stack(model(**zimage_inputs(*args, **kwargs)).sample)


class Recorder:
    """Stands in for the model's rope embedder and keeps every (ids, table) it hands out."""

    def __init__(self, embedder) -> None:
        self.embedder, self.calls = embedder, []

    def __call__(self, ids):
        out = self.embedder(ids)
        self.calls.append((ids, out))
        return out


def recorded_tables(model, *args, **kwargs):
    embedder = model.rope_embedder
    model.rope_embedder = rec = Recorder(embedder)
    try:
        run(model, *args, **kwargs)
    finally:
        model.rope_embedder = embedder
    return rec.calls


def test_detected_and_replaced_as_a_plain_object(model):
    assert not isinstance(model.rope_embedder, nn.Module)
    with dype_rope.patch(model) as handle:
        assert handle.adapter.name == "z-image" and handle.base_grid == (64, 64)
        assert not isinstance(model.rope_embedder, nn.Module)
        assert model.rope_embedder.theta == 256.0 and list(model.rope_embedder.axes_dims) == [8, 12, 12]


@pytest.mark.parametrize("grid", [BASE, (3, 2)])
def test_identity_at_or_below_base_grid(model, grid):
    ref = [run(model, *grid, t) for t in (0.0, 0.6)]
    stock = recorded_tables(model, *grid, 0.0)
    with dype_rope.patch(model, base_grid=BASE):
        got = [run(model, *grid, t) for t in (0.0, 0.6)]
        patched = recorded_tables(model, *grid, 0.0)
    for r, g in zip(ref, got):
        assert torch.equal(r, g)
    assert len(stock) == len(patched) == 2  # image, then captions
    for (ids_s, s), (ids_p, p) in zip(stock, patched):
        assert torch.equal(ids_s, ids_p) and s.dtype == p.dtype == torch.complex64 and torch.equal(s, p)


def test_tables_follow_the_core_schedule_with_reversed_time(model):
    h, w, zimage_t = 8, 9, 0.2  # Z-Image's 0.2 is DyPE's t = 0.8
    with dype_rope.patch(model, base_grid=BASE):
        calls = recorded_tables(model, h, w, zimage_t)
    image_ids = calls[0][0]
    assert (image_ids[:, 1].amax().item(), image_ids[:, 2].amax().item()) == (h - 1, w - 1)
    for ids, table in calls:  # captions share the image's plan
        ref = reference_complex(ids, AXES, THETA, [1.0, h / 4, w / 6], 0.8, (1.0, *BASE))
        torch.testing.assert_close(table.to(torch.complex128), ref, atol=2e-6, rtol=0)
    reversed_, unreversed = (
        reference_complex(image_ids, AXES, THETA, [1.0, h / 4, w / 6], t, (1.0, *BASE)) for t in (0.8, 0.2)
    )
    assert (reversed_ - unreversed).abs().max() > 0.1  # the comparison above can tell t from 1 - t


def test_omni_conditioning_images_keep_their_positions_and_the_target_sets_the_scale():
    model = tiny_zimage(siglip_feat_dim=8)
    h, w, cond = 4, 6, (10, 10)
    with dype_rope.patch(model, base_grid=(2, 3)):
        model.rope_embedder = rec = Recorder(model.rope_embedder)
        model(**zimage_omni_inputs(h, w, cond, t=0.5))
        model.rope_embedder = rec.embedder
    image_ids = rec.calls[0][0]
    assert image_ids[:, 1].amax().item() == cond[0] - 1  # the conditioning latent's own rows are there
    assert len(rec.calls) == 3  # latents, captions, SigLIP features
    for ids, table in rec.calls:
        ref = reference_complex(ids, AXES, THETA, [1.0, h / 2, w / 3], 0.5, (1.0, 2, 3))
        torch.testing.assert_close(table.to(torch.complex128), ref, atol=2e-6, rtol=0)


def test_t_follows_the_zimage_scheduler(model):
    timesteps, sigmas = sampler_timesteps(ZIMAGE_SCHEDULER, 4096)
    with dype_rope.patch(model, base_grid=(2, 3)) as handle:
        rec = TimeRecorder(handle.adapter, model.layers[0])
        for ts in timesteps:
            run(model, 4, 6, float((1000 - ts) / 1000))  # the pipeline passes (1000 - t) / 1000
        rec.close()
    check_t_follows_sampler(rec.seen, sigmas)


def test_one_graph_over_28_steps(model):
    timesteps, _ = sampler_timesteps(ZIMAGE_SCHEDULER, 4096)
    with dype_rope.patch(model, base_grid=(2, 3)):
        eager = run(model, 4, 6, float((1000 - timesteps[-1]) / 1000))
        torch._dynamo.reset()
        counter = CompileCounter()
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for ts in timesteps:
            out = torch.stack(compiled(**zimage_inputs(4, 6, float((1000 - ts) / 1000))).sample)
        assert counter.frame_count == 1
        torch.testing.assert_close(out, eager)
    torch._dynamo.reset()


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
