"""One plan per sample for families whose stock processors import their rotary function inside __call__
(per_sample.py's second route): CogView4's stock processor broadcasts tables [B, 1, S, D] sample by sample.
A mixed batch equals each sample run alone, a batch sharing one time is bit for bit the one-plan result, one
compiled graph whatever the times, nothing global or in the model's processors changes, and a stock processor
that stops broadcasting per sample is caught at install."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
from diffusers.models.transformers import transformer_cogview4 as cv4

import dype_rope
from dype_rope.adapters import cogview4 as adapter
from dype_rope.adapters.per_sample import rotates_per_sample
from families.cogview4 import COGVIEW4, cogview4_inputs, tiny_cogview4
from families.tiny import tiny
from per_sample_checks import assert_one_graph_across_times

TIMES = (200.0, 800.0)  # CogView4's pipeline passes timesteps in 0 .. 1000


def run(model, inputs, times):
    with torch.no_grad():
        return model(**inputs, timestep=torch.tensor(times, dtype=torch.float32), return_dict=False)[0]


def sample(inputs: dict, i: int) -> dict:
    return {k: v[i : i + 1] for k, v in inputs.items()}


def processors(model) -> list:
    return [m.processor for m in model.modules() if hasattr(m, "set_processor")]


def test_a_mixed_batch_above_the_base_grid_equals_each_sample_alone():
    model = tiny_cogview4()
    x = cogview4_inputs(COGVIEW4.above, batch=2)
    tables = []
    with dype_rope.patch(model, base_grid=COGVIEW4.base):
        h = model.rope.register_forward_hook(lambda m, a, out: tables.append(out))
        mixed = run(model, x, TIMES)
        alone = [run(model, sample(x, i), (t,)) for i, t in enumerate(TIMES)]
        h.remove()
    assert not torch.allclose(alone[0], alone[1])
    for i, own in enumerate(alone):
        # the projections run as one batched GEMM instead of two: the rounding of their sums may differ
        torch.testing.assert_close(mixed[i : i + 1], own, rtol=1e-5, atol=1e-5)
    (cos, sin), own = tables[0], tables[1:]
    assert cos.shape[:2] == (2, 1)
    for i, (c, s) in enumerate(own):  # a sample alone: one plan, the stock tables' shape [S, D]
        assert c.dim() == 2 and torch.equal(cos[i, 0], c) and torch.equal(sin[i, 0], s)
    assert not torch.equal(cos[0], cos[1])


def test_a_batch_sharing_one_time_is_the_one_plan_result_bit_for_bit():
    # a processor class DyPE has not probed (here a bare subclass of the stock one) takes shared tables [S, D]:
    # the same stock arithmetic, one plan for the call; per-sample tables of one time must give the same bits
    model = tiny_cogview4()
    x = cogview4_inputs(COGVIEW4.above, batch=2)

    class Shared(cv4.CogView4AttnProcessor):
        pass

    with dype_rope.patch(model, base_grid=COGVIEW4.base):
        per_sample = run(model, x, (500.0, 500.0))
        for attn in (m for m in model.modules() if hasattr(m, "set_processor")):
            attn.set_processor(Shared())
        one_plan = run(model, x, (500.0, 500.0))
    assert torch.equal(per_sample, one_plan)


@pytest.mark.parametrize("times", [(500.0, 500.0), TIMES])
def test_at_or_below_the_base_grid_any_batch_is_the_stock_model(times):
    model = tiny_cogview4()
    for grid, base in COGVIEW4.below:
        x = cogview4_inputs(grid, batch=2)
        stock = run(model, x, times)
        with dype_rope.patch(model, base_grid=base):
            assert torch.equal(run(model, x, times), stock)


def test_one_compiled_graph_whatever_the_times():
    model = tiny_cogview4()
    x = cogview4_inputs(COGVIEW4.above, batch=2)
    pairs = (TIMES, TIMES[::-1], (200.0, 200.0))
    assert_one_graph_across_times(model, lambda m, p: run(m, x, p), pairs, COGVIEW4.base)


def test_nothing_global_changes_and_remove_restores_the_model(monkeypatch):
    monkeypatch.setattr(adapter, "_PROBED", {})  # the install runs its probe here
    model, other = tiny_cogview4(), tiny_cogview4()
    before, stock_call = processors(model), cv4.CogView4AttnProcessor.__call__
    stock_rope = model.rope
    x = cogview4_inputs(COGVIEW4.above, batch=2)
    unpatched = run(model, x, (500.0, 500.0))
    rng = torch.get_rng_state()
    handle = dype_rope.patch(model, base_grid=COGVIEW4.base)
    assert torch.equal(torch.get_rng_state(), rng)  # the install probe keeps the global random state
    run(model, x, TIMES)
    assert all(p is b for p, b in zip(processors(model), before))  # the stock processors themselves
    assert all(type(p) is cv4.CogView4AttnProcessor for p in processors(other))
    assert cv4.CogView4AttnProcessor.__call__ is stock_call
    handle.remove()
    assert model.rope is stock_rope and torch.equal(run(model, x, (500.0, 500.0)), unpatched)


def test_a_processor_set_after_patching_falls_back_to_one_plan_per_call():
    model = tiny_cogview4()
    with dype_rope.patch(model, base_grid=COGVIEW4.base):
        model.transformer_blocks[0].attn1.set_processor(cv4.CogView4TrainingAttnProcessor())
        with pytest.raises(ValueError, match="all samples of a batch must share one diffusion time"):
            run(model, cogview4_inputs(COGVIEW4.above, batch=2), TIMES)


def test_a_stock_processor_that_no_longer_broadcasts_per_sample_is_caught_at_install(monkeypatch):
    # what a diffusers release that changed the processor's indexing would do: rotate every sample by the first
    # sample's tables. The probe must see it, and the install then plans once per call.
    class FirstSampleOnly(cv4.CogView4AttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
            if image_rotary_emb is not None and image_rotary_emb[0].dim() == 4:
                image_rotary_emb = tuple(t[0, 0] for t in image_rotary_emb)
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    attn = cv4.CogView4TransformerBlock(dim=8, num_attention_heads=2, attention_head_dim=4, time_embed_dim=8).attn1
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(2, 6, 8, generator=g),
                  encoder_hidden_states=torch.randn(2, 3, 8, generator=g))
    tables = [(torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)) for _ in range(2)]
    assert rotates_per_sample(attn, attn.processor, attn.processor, inputs, tables, adapter.per_sample_tables) is None
    broken = FirstSampleOnly()
    assert "sample 1" in rotates_per_sample(attn, broken, broken, inputs, tables, adapter.per_sample_tables)

    monkeypatch.setattr(adapter, "_PROBED", {})
    monkeypatch.setattr(adapter, "stock_processor_rotates_per_sample", lambda: "a simulated mismatch")
    model = tiny_cogview4()
    with pytest.warns(RuntimeWarning, match="CogView4's stock attention processor no longer matches"):
        handle = dype_rope.patch(model, base_grid=COGVIEW4.base)
    with handle, pytest.raises(ValueError, match="all samples of a batch must share one diffusion time"):
        run(model, cogview4_inputs(COGVIEW4.above, batch=2), TIMES)


def test_diffusers_own_cogview4_model_test_inputs_run_with_dype_active():
    # diffusers' CogView4 model tests: their dummy config and inputs, a batch of 2 at random integer timesteps;
    # with a base grid below the 4 x 4 tokens DyPE rescales, and each sample must be its own run
    config = dict(patch_size=2, in_channels=4, num_layers=2, attention_head_dim=4, num_attention_heads=4,
                  out_channels=4, text_embed_dim=8, time_embed_dim=8, condition_dim=4)
    model = tiny("CogView4Transformer2DModel", config)
    g = torch.Generator().manual_seed(0)
    x = dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g),
             encoder_hidden_states=torch.randn(2, 8, 8, generator=g),
             original_size=torch.tensor([64, 64]).unsqueeze(0).repeat(2, 1),
             target_size=torch.tensor([64, 64]).unsqueeze(0).repeat(2, 1),
             crop_coords=torch.tensor([0, 0]).unsqueeze(0).repeat(2, 1))
    times = torch.randint(0, 1000, size=(2,), generator=g).float().tolist()
    with dype_rope.patch(model, base_grid=(2, 3)):
        out = run(model, x, times)
        alone = [run(model, sample(x, i), (t,)) for i, t in enumerate(times)]
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    for i, own in enumerate(alone):
        torch.testing.assert_close(out[i : i + 1], own, rtol=1e-5, atol=1e-5)
