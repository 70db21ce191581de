"""What the AnyFlow rows (adapters/families/by_anyflow.py) do beyond the contract (tests/test_contract.py): the
complex tables against a hand-built reference, a module off its declared theta refused, mixed-time batches,
conditioning frames at timestep 0, FAR's KV-cache prefill and compressed windows, whole chunked generations, dype_rope.enable() on both
pipelines."""

from __future__ import annotations

import inspect

import pytest
import torch

import dype_rope
from families.anyflow import ANYFLOW, ANYFLOW_FAR, FLOW_MAP, TINY_ANYFLOW, TINY_FAR, anyflow_inputs, far_inputs
from families.row import complex_pairs, encoding_calls
from families.tiny import tiny
from families.video import video_positions
from reference_dype import rope_pairs


def tables(model, x):
    calls = encoding_calls(model, "rope", lambda: ANYFLOW.run(model, x))
    return [complex_pairs(out["query"]) for _, out in calls]


def test_stock_tables_are_plain_rope_on_frames_rows_columns():
    """Hand-derived: head 18 -> 6 / 6 / 6 channels, theta 10000, arange positions frames-major."""
    model = ANYFLOW.build()
    got = tables(model, ANYFLOW.inputs((2, 3, 4), 1.0))
    pos = video_positions(2, 3, 4)
    omega = 10000.0 ** (-torch.arange(0, 6, 2, dtype=torch.float64) / 6)
    angles = torch.cat([pos[:, a : a + 1] * omega for a in range(3)], dim=-1)
    torch.testing.assert_close(got[0], torch.stack([angles.cos(), angles.sin()], -1), rtol=0, atol=1e-15)


def test_a_module_whose_tables_are_off_its_theta_is_refused():
    """A module that caches tables built at theta 10500 while its attribute says 10000: patched from the
    attribute, it would be wrong; the probe of its real output tells."""
    from diffusers.models.transformers.transformer_anyflow import AnyFlowRotaryPosEmbed

    model = ANYFLOW.build()
    model.rope = AnyFlowRotaryPosEmbed(TINY_ANYFLOW["attention_head_dim"], (1, 2, 2), 64, theta=10500.0)
    model.rope._build_freqs(torch.device("cpu"))  # cached per device
    model.rope.theta = 10000.0
    with pytest.raises(TypeError, match="does not return plain RoPE with theta=10000"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_mixed_time_batches_are_refused_above_the_base_grid_and_stock_below_it():
    """The complex tables carry no batch dimension: one plan per call."""
    model = ANYFLOW.build()
    t = torch.tensor([[1000.0] * 2, [400.0] * 2], dtype=torch.float64)
    above, below = anyflow_inputs((2, 6, 7), batch=2), anyflow_inputs((2, 3, 4), batch=2)
    for x in (above, below):
        x.update(timestep=t, r_timestep=0.5 * t)
    ref = ANYFLOW.run(model, below)
    with dype_rope.patch(model, base_grid=(3, 4)):
        assert torch.equal(ANYFLOW.run(model, below), ref)
        with pytest.raises(ValueError, match="share one diffusion time"):
            ANYFLOW.run(model, above)


def test_conditioning_frames_at_zero_leave_the_generated_frames_time():
    """AnyFlowPipeline's video conditioning sets the timestep of its latent prefix to 0: the scale's time is the
    generated frames' (the largest), checked with Dy-PI (every angle omega / s ** t)."""
    model = ANYFLOW.build()
    x = anyflow_inputs((2, 6, 7))
    x.update(timestep=torch.tensor([[0.0, 375.0]], dtype=torch.float64), r_timestep=torch.zeros(1, 2))
    with dype_rope.patch(model, base_grid=(3, 4), method="pi", lambda_s=1.0, lambda_t=1.0):
        got = tables(model, x)
    want = rope_pairs(video_positions(2, 6, 7), (6, 6, 6), 10000.0, (1.0, 2.0, 7 / 4), 0.375, (1.0, 3.0, 4.0),
                      method="pi", lambdas=(1.0, 1.0))
    torch.testing.assert_close(got[0], torch.stack(want, -1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls_name, row", [("AnyFlowPipeline", ANYFLOW), ("AnyFlowFARPipeline", ANYFLOW_FAR)])
def test_enable_keeps_the_flow_map_schedule(cls_name, row):
    """FlowMapEulerDiscreteScheduler applies a fixed shift (no mu): enable() patches the transformer only."""
    import diffusers

    def schedule(scheduler):
        scheduler.set_timesteps(6)
        return scheduler.timesteps.clone(), scheduler.sigmas.clone()

    cls = getattr(diffusers, cls_name)
    parts = {n: None for n in inspect.signature(cls.__init__).parameters if n != "self"}
    parts.update(transformer=row.build(), scheduler=diffusers.FlowMapEulerDiscreteScheduler(**FLOW_MAP))
    pipe = cls(**parts)
    want = schedule(diffusers.FlowMapEulerDiscreteScheduler(**FLOW_MAP))
    handle = dype_rope.enable(pipe, 960, 1664)
    assert handle.mu is None and handle.transformer.adapter.name == row.adapter
    assert handle.transformer.base_grid == (30, 52)
    assert all(torch.equal(g, w) for g, w in zip(schedule(pipe.scheduler), want))
    handle.remove()
    assert not dype_rope.is_patched(pipe.transformer) and "set_timesteps" not in vars(pipe.scheduler)


def test_far_prefill_at_timestep_zero_writes_the_stock_cache_above_the_base_grid():
    """AnyFlowFARPipeline writes each finished chunk's KV cache in a call at timestep 0, where every DyPE schedule is
    the stock RoPE; the cache holds keys before RoPE (the attention rotates cached and new keys together with the
    step's tables). So the cache a patched model writes is the stock one bit for bit, and the steps that read it
    apply their own tables to it (the contract checks those tables over the cached tokens)."""
    import copy

    def prefill(model):
        x = far_inputs((2, 8, 10))
        part = x["chunk_partition"][:2]  # the first two chunks, finished: 3 frames
        latent = torch.randn(1, sum(part), 4, 16, 20, generator=torch.Generator().manual_seed(5))
        flag = {"num_cached_chunks": 1, "is_cache_step": True}
        cache = copy.deepcopy(x["kv_cache"])
        zeros = torch.zeros(1, sum(part), dtype=torch.float64)
        mask = model.build_attention_mask(chunk_partition=part, height=16, width=20, device=latent.device, mode="cache")
        with torch.no_grad():
            model(hidden_states=latent, timestep=zeros, r_timestep=zeros, encoder_hidden_states=x["encoder_hidden_states"],
                  chunk_partition=part, attention_mask=mask, kv_cache=cache, kv_cache_flag=flag, return_dict=False)
        return cache

    model = ANYFLOW_FAR.build()
    stock = prefill(model)
    with dype_rope.patch(model, base_grid=(4, 6)):
        patched = prefill(model)
        step = ANYFLOW_FAR.run(model, ANYFLOW_FAR.inputs((2, 8, 10), 0.8))
    assert all(torch.equal(stock[0][k], patched[0][k]) for k in stock[0])
    assert not torch.equal(ANYFLOW_FAR.run(model, ANYFLOW_FAR.inputs((2, 8, 10), 0.8)), step)  # the step itself moves


def test_far_compressed_windows_whose_pool_is_not_a_centre_are_refused():
    """With 8 x 8 full-resolution tokens per compressed token the stock average pool flips the sign of the pairs
    whose 8 omega / 2 > pi: those tokens are not RoPE at the windows' centres, and the probe refuses the row."""
    model = tiny("AnyFlowFARTransformer3DModel", TINY_FAR, compressed_patch_size=(1, 16, 16))
    with pytest.raises(TypeError, match="does not return plain RoPE"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def far_reference_positions(compressed: int, total: int, rows: int, cols: int, clean: bool = False):
    """By hand: `compressed` frames on the half-size grid at their 2 x 2 windows' centres, then the frames up to
    `total` at full resolution (twice for a training rollout with its clean copy)."""
    pooled = video_positions(compressed, rows // 2, cols // 2)
    pooled[:, 1:] = 2 * pooled[:, 1:] + 0.5
    full = video_positions(total - compressed, rows, cols)
    full[:, 0] += compressed
    return torch.cat([pooled, full, *([full] if clean else [])])


def test_far_every_chunk_of_a_generation_and_its_cache_follow_the_schedule():
    """AnyFlowFARPipeline's loop on chunks (1, 2, 2), at most 2 at full resolution: a step of each chunk (its
    tables over every key: compressed and full cached context, then the chunk), each prefill in between at
    timestep 0 (plain RoPE). Dy-PI with kappa = t pins the step's time; 8 x 10 tokens against a 4 x 6 base."""
    import copy

    model, (rows, cols), t = ANYFLOW_FAR.build(), (8, 10), 0.625
    x = far_inputs((2, rows, cols))
    cache = {0: {k: torch.zeros_like(v) for k, v in x["kv_cache"][0].items()}}
    g = torch.Generator().manual_seed(3)
    chunks, flag, done = list(x["chunk_partition"]), {"num_cached_chunks": 0, "is_cache_step": False}, 0
    # per chunk: (compressed frames, total frames) of the step's keys, from full_chunk_limit 2
    expected = [(0, 1), (0, 3), (1, 5)]
    schedule = dict(method="pi", lambda_s=1.0, lambda_t=1.0)
    with dype_rope.patch(model, base_grid=(4, 6), **schedule):
        for c, n in enumerate(chunks):
            latent = torch.randn(1, n, 4, 2 * rows, 2 * cols, generator=g)
            ts = torch.full((1, n), 1000 * t, dtype=torch.float64)
            step = dict(hidden_states=latent, timestep=ts, r_timestep=0.5 * ts, chunk_partition=chunks[: c + 1],
                        encoder_hidden_states=x["encoder_hidden_states"], kv_cache=cache,
                        kv_cache_flag=copy.deepcopy(flag), return_dict=False)
            calls = encoding_calls(model, "rope", lambda: ANYFLOW_FAR.run(model, step))
            positions = far_reference_positions(*expected[c], rows, cols)
            want = rope_pairs(positions, (6, 6, 6), 10000.0, (1.0, 2.0, 10 / 6), t, (1.0, 4.0, 6.0),
                              method="pi", lambdas=(1.0, 1.0))
            torch.testing.assert_close(complex_pairs(calls[0][1]["key"]), torch.stack(want, -1), rtol=0, atol=1e-12)
            done += n
            if c + 1 < len(chunks):  # the pipeline's prefill of the finished chunks
                part, zeros = chunks[: c + 1], torch.zeros(1, done, dtype=torch.float64)
                flag["is_cache_step"] = True
                mask = model.build_attention_mask(chunk_partition=part, height=2 * rows, width=2 * cols,
                                                  device=latent.device, mode="cache")
                prefill = dict(hidden_states=torch.randn(1, done, 4, 2 * rows, 2 * cols, generator=g),
                               timestep=zeros, r_timestep=zeros, encoder_hidden_states=x["encoder_hidden_states"],
                               chunk_partition=part, attention_mask=mask, kv_cache=cache,
                               kv_cache_flag=copy.deepcopy(flag), return_dict=False)
                with torch.no_grad():
                    calls = encoding_calls(model, "rope", lambda: model(**prefill))
                compressed = sum(part[:-1])  # the prefill keeps full_chunk_limit - 1 chunks at full resolution
                plain = rope_pairs(far_reference_positions(compressed, done, rows, cols), (6, 6, 6), 10000.0,
                                   (1.0, 1.0, 1.0), 0.0, (1.0, 1.0, 1.0))
                torch.testing.assert_close(complex_pairs(calls[0][1]["key"]), torch.stack(plain, -1), rtol=0, atol=1e-12)
                flag["num_cached_chunks"] += 1
                flag["is_cache_step"] = False


def test_far_training_rollout_with_clean_frames_follows_the_schedule():
    """The rollout without a cache (`clean_hidden_states`: the clean copy of the full frames after them)."""
    model, (rows, cols), t = ANYFLOW_FAR.build(), (8, 10), 0.625
    g = torch.Generator().manual_seed(4)
    frames = sum(TINY_FAR["chunk_partition"])
    ts = torch.full((1, frames), 1000 * t, dtype=torch.float64)
    x = dict(hidden_states=torch.randn(1, frames, 4, 2 * rows, 2 * cols, generator=g), timestep=ts, r_timestep=0.5 * ts,
             clean_hidden_states=torch.randn(1, frames - 1, 4, 2 * rows, 2 * cols, generator=g),
             clean_timestep=torch.zeros(1, frames - 1, dtype=torch.float64),
             encoder_hidden_states=torch.randn(1, 5, 16, generator=g), chunk_partition=list(TINY_FAR["chunk_partition"]),
             return_dict=False)
    schedule = dict(method="pi", lambda_s=1.0, lambda_t=1.0)
    with dype_rope.patch(model, base_grid=(4, 6), **schedule), torch.no_grad():
        calls = encoding_calls(model, "rope", lambda: model(**x))
    # 3 chunks, at most 2 at full resolution: the first chunk's frame compressed
    want = rope_pairs(far_reference_positions(1, frames, rows, cols, clean=True), (6, 6, 6), 10000.0,
                      (1.0, 2.0, 10 / 6), t, (1.0, 4.0, 6.0), method="pi", lambdas=(1.0, 1.0))
    torch.testing.assert_close(complex_pairs(calls[0][1]["key"]), torch.stack(want, -1), rtol=0, atol=1e-12)
