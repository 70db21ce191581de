"""Qwen-Image adapter: centred positions, text after the image's half-extent, complex64 tables that must
never come from a cache built for another t or size, Qwen-Image-Edit's conditioning images."""

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
from tiny_qwen_image import QWEN_IMAGE_SCHEDULER, qwen_inputs, tiny_qwen_image

AXES, THETA = (8, 12, 12), 10000.0
BASE = (4, 6)


@pytest.fixture
def model():
    return tiny_qwen_image()


def run(model, *args, **kwargs):
    return model(**qwen_inputs(*args, **kwargs)).sample


def centred(n):
    """Qwen-Image's centred positions, written out: n = 5 -> -3, -2, -1, 0, 1; n = 4 -> -2, -1, 0, 1."""
    return list(range(-(n - n // 2), n // 2))


def hand_positions(shapes, text_len):
    image = [(i, r, c) for i, (_, h, w) in enumerate(shapes) for r in centred(h) for c in centred(w)]
    start = max(max(h // 2, w // 2) for _, h, w in shapes)
    text = [(start + k,) * 3 for k in range(text_len)]
    return torch.tensor(image, dtype=torch.float64), torch.tensor(text, dtype=torch.float64)


def tables_of(model, *args, **kwargs):
    seen = []
    hook = model.pos_embed.register_forward_hook(lambda m, a, out: seen.append(out))
    run(model, *args, **kwargs)
    hook.remove()
    return seen[0]


def test_centred_positions_written_out():
    assert centred(5) == [-3, -2, -1, 0, 1] and centred(4) == [-2, -1, 0, 1]


def test_detected_with_native_base_grid_and_overrides(model):
    with dype_rope.patch(model) as handle:
        assert handle.adapter.name == "qwen-image" and handle.base_grid == (83, 83)  # 1328 px
    with dype_rope.patch(model, base_resolution=1024) as handle:
        assert handle.base_grid == (64, 64)
    with dype_rope.patch(model, base_grid=(50, 70)) as handle:
        assert handle.base_grid == (50, 70)


@pytest.mark.parametrize("grid,cond", [(BASE, None), ((3, 5), None), (BASE, (5, 3))])
def test_identity_at_or_below_base_grid(model, grid, cond):
    ref = [run(model, *grid, t, cond=cond) for t in (1.0, 0.3)]
    stock = tables_of(model, *grid, 1.0, cond=cond)
    with dype_rope.patch(model, base_grid=BASE):
        got = [run(model, *grid, t, cond=cond) for t in (1.0, 0.3)]
        patched = tables_of(model, *grid, 1.0, cond=cond)
    for r, g in zip(ref, got):
        assert torch.equal(r, g)
    for s, p in zip(stock, patched):
        assert s.dtype == p.dtype == torch.complex64 and torch.equal(s, p)


@pytest.mark.parametrize("cond", [None, (9, 11)])
def test_tables_follow_the_core_schedule_on_qwen_positions(model, cond):
    h, w, t = 9, 13, 0.6
    with dype_rope.patch(model, base_grid=BASE):
        vid, txt = tables_of(model, h, w, t, cond=cond)
    shapes = [(1, h, w)] + ([(1, *cond)] if cond else [])
    image_pos, text_pos = hand_positions(shapes, 5)
    scales = [1.0, h / BASE[0], w / BASE[1]]  # from the generated image, not the larger conditioning one
    for table, pos in ((vid, image_pos), (txt, text_pos)):
        ref = reference_complex(pos, AXES, THETA, scales, t, (1.0, *BASE))
        assert table.dtype == torch.complex64
        # Qwen-Image's own angles are float32: allow float32 rounding of angles up to ~30 rad.
        torch.testing.assert_close(table.to(torch.complex128), ref, atol=1e-5, rtol=0)


def test_tables_are_never_reused_across_t_or_size(model):
    with dype_rope.patch(model, base_grid=BASE):
        first = tables_of(model, 8, 12, 1.0)
        other_t = tables_of(model, 8, 12, 0.2)
        again = tables_of(model, 8, 12, 1.0)
        other_size = tables_of(model, 8, 10, 0.2)
    assert not torch.equal(first[0], other_t[0])  # Dy-YaRN's frequencies move with t
    assert torch.equal(first[0], again[0]) and first[0] is not again[0]
    ref = reference_complex(hand_positions([(1, 8, 10)], 5)[0], AXES, THETA, [1.0, 2.0, 10 / 6], 0.2, (1.0, *BASE))
    torch.testing.assert_close(other_size[0].to(torch.complex128), ref, atol=1e-5, rtol=0)
    # and the stock encoding's own cache is left as it was: unpatched, the stock table comes back
    stock = tables_of(tiny_qwen_image(), 8, 12, 1.0)
    assert not torch.equal(stock[0], first[0])
    assert torch.equal(tables_of(model, 8, 12, 1.0)[0], stock[0])


def test_t_follows_the_qwen_image_scheduler(model):
    timesteps, sigmas = sampler_timesteps(QWEN_IMAGE_SCHEDULER, 6889)  # 1328 px
    with dype_rope.patch(model, base_grid=(2, 3)) as handle:
        rec = TimeRecorder(handle.adapter, model.transformer_blocks[0])
        for ts in timesteps:
            run(model, 4, 6, float(ts / 1000))  # the pipeline passes timestep / 1000
        rec.close()
    check_t_follows_sampler(rec.seen, sigmas)
    assert rec.seen[-1] == pytest.approx(0.02)  # shift_terminal


def test_one_graph_over_28_steps(model):
    timesteps, _ = sampler_timesteps(QWEN_IMAGE_SCHEDULER, 6889)
    with dype_rope.patch(model, base_grid=(2, 3)):
        eager = run(model, 4, 6, float(timesteps[-1] / 1000))
        torch._dynamo.reset()
        counter = CompileCounter()
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for ts in timesteps:
            out = compiled(**qwen_inputs(4, 6, float(ts / 1000))).sample
        assert counter.frame_count == 1
        torch.testing.assert_close(out, eager)
    torch._dynamo.reset()


def test_remove_restores_bit_for_bit(model):
    before, original = state_of(model), model.pos_embed
    ref = run(model, 8, 12, 0.6)
    handle = dype_rope.patch(model, base_grid=BASE)
    assert [n for n, _ in model.named_modules()] == before["names"]
    assert "pos_embed" in type(model)._cp_plan and model.get_submodule("pos_embed") is model.pos_embed
    assert not torch.equal(run(model, 8, 12, 0.6), ref)
    handle.remove()
    assert model.pos_embed is original
    assert_same_state(before, state_of(model))
    assert torch.equal(run(model, 8, 12, 0.6), ref)


def test_context_parallel_hooks_installed_before_the_patch_are_carried(model):
    from diffusers.hooks.context_parallel import ContextParallelSplitHook
    from diffusers.hooks.hooks import HookRegistry

    name = "cp_input---pos_embed"
    split = ContextParallelSplitHook(type(model)._cp_plan["pos_embed"], parallel_config=None)
    HookRegistry.check_if_exists_or_initialize(model.pos_embed).register_hook(split, name)
    original = model.pos_embed
    with dype_rope.patch(model, base_grid=BASE):
        carried = model.pos_embed._diffusers_hook.hooks
        assert list(carried) == [name] and isinstance(carried[name], ContextParallelSplitHook)
    assert model.pos_embed is original and original._diffusers_hook.hooks == {name: split}


def test_four_times_the_base_grid_stays_finite(model):
    with dype_rope.patch(model, base_grid=(2, 3)):
        out = run(model, 8, 12, 1.0, cond=(8, 12))
    assert torch.isfinite(out).all()


def test_layered_variant_is_refused_clearly():
    model = tiny_qwen_image(use_layer3d_rope=True)
    with pytest.raises(TypeError, match="use_layer3d_rope"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)
