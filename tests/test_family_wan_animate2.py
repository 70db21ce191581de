"""What Wan Animate 2 (adapters/families/by_method.py) does beyond the contract suite, which runs its denoising call:
the reference pass ("extract") at the model's own timestep, the reference tables of the denoising call (the
cached keys, stored before RoPE, rotated with the step's plan), a reference pass followed by a denoising step as
the pipeline runs them, the install probe leaving the model's table cache as it was, and dype_rope.enable() on
the modular pipeline (a fixed shift: the scheduler is left alone)."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.row import TablesArgument, complex_pairs, encoding_calls
from families.wan_animate2 import LATENT, WAN_ANIMATE2, table_positions, tiny_wan_animate2
from reference_dype import axis_ratios, rope_pairs

BASE = (3, 4)
AXES, THETA = (6, 6, 6), 10000.0
FIRST_TABLE = TablesArgument("blocks", "rotary_emb")
REFERENCE_TABLE = TablesArgument("blocks", "reference_rotary_emb")


def extract_inputs(grid, timestep: float, seed: int = 1) -> dict:
    """WanAnimate2RefExtractStep's call: the driving-video segment's latent [C, F, H, W] and its conditioning, the
    first step's timestep, offset_grid_sizes the segment's token grid."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    g = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    latent = (LATENT, frames, 2 * rows, 2 * cols)
    return dict(
        hidden_states=[torch.randn(*latent, generator=g)],
        timestep=torch.tensor([timestep]),
        encoder_hidden_states=[torch.randn(5, 16, generator=g)],
        condition_latents=[torch.randn(*latent, generator=g)],
        kv_cache=WanAnimate2KVCache(len(WAN_ANIMATE2_LAYERS)),
        kv_cache_mode="extract",
        seq_len=frames * rows * cols,
        offset_grid_sizes=torch.tensor([grid]),
        return_dict=False,
    )


WAN_ANIMATE2_LAYERS = (0, 1)


def want(positions, grid, t, method="yarn"):
    """The float64 reference on a table's rows: rows and columns stretched by the generated grid over BASE."""
    spans, base_lens = (1.0, *grid[1:]), (1.0, *BASE)
    scales = axis_ratios(spans, base_lens, (1, 2))
    return torch.stack(rope_pairs(positions, AXES, THETA, scales, t, base_lens, method=method), -1)


def tables(model, name, run):
    return [complex_pairs(out) for _, out in encoding_calls(model, name, run)]


def test_the_reference_pass_takes_the_model_own_timestep():
    """Under "extract" the model modulates every block at timestep 1 whatever it is handed (the pipeline hands it
    the first step's): the reference tables are the schedule at t = 1 / 1000 on the reference's rows (frame 1,
    rows from 0, columns after the segment's width: refer_offset_w = -1), the scale set by the segment's grid."""
    model = tiny_wan_animate2(num_layers=2)
    grid = (2, 6, 7)
    with dype_rope.patch(model, base_grid=BASE):
        seen = {
            ts: tables(model, FIRST_TABLE, lambda: model(**extract_inputs(grid, ts)))
            for ts in (999.0, 250.0)
        }
    rows = table_positions((1, 0, grid[2]))
    for got in seen.values():
        assert len(got) == 1
        torch.testing.assert_close(got[0], want(rows, grid, 1 / 1000), rtol=0, atol=1e-12)
    # not vacuous: the time passed in would give other tables
    assert (seen[999.0][0] - want(rows, grid, 0.999)).abs().max() > 1e-3


def test_the_reference_pass_keeps_stock_keys_and_is_stock_at_the_base_grid():
    """Keys and values are cached before RoPE: the first layer's cache is the stock one even above the base grid
    (later layers see the first one's attention). At or below the base grid the whole pass is stock."""
    model = tiny_wan_animate2(num_layers=2)

    def extract(grid):
        x = extract_inputs(grid, 999.0)
        out = model(**x)[0][0]
        return out, [x["kv_cache"].get(i).get() for i in WAN_ANIMATE2_LAYERS]

    with torch.no_grad():
        stock_above, stock_at = extract((2, 6, 7)), extract((2, 3, 4))
        with dype_rope.patch(model, base_grid=BASE, method="pi"):
            above, at = extract((2, 6, 7)), extract((2, 3, 4))
    assert all(torch.equal(a, b) for a, b in zip(above[1][0], stock_above[1][0]))
    assert not torch.equal(above[0], stock_above[0])  # the pass itself is rescaled (Dy-PI at t = 1 / 1000)
    assert torch.equal(at[0], stock_at[0])
    assert all(torch.equal(a, b) for layer, ref in zip(at[1], stock_at[1]) for a, b in zip(layer, ref))


@pytest.mark.parametrize("cond", [None, (5, 2)], ids=["same-size", "other-size"])
def test_cached_keys_are_rotated_with_the_step_plan(cond):
    """Under "cached" the reference keys from the cache are rotated with reference_rotary_emb at every step: the
    schedule at the step's own t, on the reference's rows, scaled by the generated segment's grid (a reference of
    another size changes its offsets, never the scale)."""
    model = tiny_wan_animate2()
    grid, t = (2, 6, 7), 0.375
    with dype_rope.patch(model, base_grid=BASE):
        got = tables(model, REFERENCE_TABLE, lambda: WAN_ANIMATE2.run(model, WAN_ANIMATE2.inputs(grid, t, cond=cond)))
    ref_cols = (cond or grid[1:])[1]
    assert len(got) == 1
    torch.testing.assert_close(got[0], want(table_positions((1, 0, ref_cols)), grid, t), rtol=0, atol=1e-12)


def test_a_reference_pass_then_a_denoising_step_as_the_pipeline_runs_them():
    """The segment loop: extract fills the cache, the denoising step reads it. At the base grid both are stock bit
    for bit; above it the step differs, and remove() gives the stock model back."""
    model = tiny_wan_animate2()

    def segment(grid):
        x = extract_inputs((grid[0] - 1, *grid[1:]), 999.0)
        model(**x)
        step = WAN_ANIMATE2.inputs(grid, 0.9)
        step["kv_cache"] = x["kv_cache"]
        return WAN_ANIMATE2.run(model, step)

    with torch.no_grad():
        stock_at, stock_above = segment((2, 3, 4)), segment((2, 6, 7))
        handle = dype_rope.patch(model, base_grid=BASE)
        at, above = segment((2, 3, 4)), segment((2, 6, 7))
        handle.remove()
        after = segment((2, 6, 7))
    assert torch.equal(at, stock_at) and not torch.equal(above, stock_above) and torch.equal(after, stock_above)


def test_the_install_probe_leaves_the_table_cache_as_it_was():
    model = tiny_wan_animate2()
    before = dict(model.rope_freqs_cache)
    with dype_rope.patch(model, base_grid=BASE):
        assert model.rope_freqs_cache.keys() == before.keys()
        assert all(model.rope_freqs_cache[k] is v for k, v in before.items())


def test_enable_patches_the_transformer_and_keeps_the_fixed_shift():
    """WanAnimate2SegmentSchedulerResetStep calls set_timesteps(num_inference_steps) without mu: no shift to pin."""
    from diffusers import UniPCMultistepScheduler
    from diffusers.modular_pipelines.wan_animate_2.modular_pipeline import WanAnimate2ModularPipeline

    config = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)

    def schedule(scheduler):
        scheduler.set_timesteps(12)
        return scheduler.timesteps.clone(), scheduler.sigmas.clone()

    pipe = WanAnimate2ModularPipeline()
    pipe.update_components(transformer=tiny_wan_animate2(), scheduler=UniPCMultistepScheduler(**config))
    handle = dype_rope.enable(pipe, 1600, 1280)
    assert handle.mu is None and handle.transformer.adapter.name == "wan_animate2"
    assert handle.transformer.base_grid == (50, 40) and handle.image_seq_len == (1600 // 16) * (1280 // 16)
    assert all(torch.equal(g, w) for g, w in zip(schedule(pipe.scheduler), schedule(UniPCMultistepScheduler(**config))))
    with pytest.raises(ValueError, match="no resolution shift"):
        dype_rope.enable(pipe, 1600, 1280, shift="linear")
    handle.remove()
    assert not dype_rope.is_patched(pipe.transformer)


def test_mixed_time_batches_are_refused_above_the_base_grid_and_stock_below_it():
    """The tables carry no batch dimension (one per call, every sample rotated alike): one plan per call."""
    model = tiny_wan_animate2()
    above = WAN_ANIMATE2.inputs_at((2, 6, 7), torch.tensor([1000.0, 400.0]), batch=2)
    below = WAN_ANIMATE2.inputs_at((2, 3, 4), torch.tensor([1000.0, 400.0]), batch=2)
    ref = WAN_ANIMATE2.run(model, below)
    with dype_rope.patch(model, base_grid=BASE):
        assert torch.equal(WAN_ANIMATE2.run(model, below), ref)
        with pytest.raises(ValueError, match="share one diffusion time"):
            WAN_ANIMATE2.run(model, above)


def test_a_kept_handle_lets_a_dropped_model_go_and_a_copy_is_refused():
    import copy
    import gc
    import weakref

    model = tiny_wan_animate2()
    handle = dype_rope.patch(model, base_grid=BASE)
    WAN_ANIMATE2.run(model, WAN_ANIMATE2.inputs((2, 6, 7), 0.5))
    with pytest.raises(TypeError, match="deepcopy"):
        copy.deepcopy(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None, "the kept handle kept the model alive"
    assert not handle.active


def test_a_table_method_off_the_declared_layout_is_refused_and_leaves_no_cache_entry():
    """A `_rope_freqs` that puts its rows one position later than the row declares (an instance wrapper here) is
    refused at install with the difference named, and its probe's tables do not stay in the model's cache."""
    model = tiny_wan_animate2()
    stock = type(model)._rope_freqs

    def shifted(offsets, device):
        return stock(model, (offsets[0], offsets[1] + 1, offsets[2]), device)

    model._rope_freqs = shifted
    before = set(model.rope_freqs_cache)
    with pytest.raises(TypeError, match="does not return plain RoPE"):
        dype_rope.patch(model, base_grid=BASE)
    assert set(model.rope_freqs_cache) == before and not dype_rope.is_patched(model)
    assert vars(model)["_rope_freqs"] is shifted
