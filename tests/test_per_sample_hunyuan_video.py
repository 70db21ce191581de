"""One plan per sample for HunyuanVideo through per-sample copies of its stock processor
(adapters/hunyuan_video_per_sample.py): a mixed batch (a padded text token too) equals each sample run alone, a
batch sharing one time is bit for bit the stock processors given one plan, at or below the base grid any batch
is the stock model, one compiled graph whatever the times, remove() puts back the very processors, and a copy
that no longer computes what the stock processor does is caught at install."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
from diffusers.models.transformers import transformer_hunyuan_video as hv

import dype_rope
from dype_rope.adapters import hunyuan_video as adapter
from dype_rope.adapters.hunyuan_video_per_sample import PerSampleHunyuanVideoAttnProcessor
from families.video import hunyuan_video_inputs, tiny_hunyuan_video
from per_sample_checks import assert_one_graph_across_times

TIMES = (300.0, 700.0)  # the pipeline's timesteps, 0 .. 1000
GRID, BASE = (2, 6, 8), (4, 6)


def inputs_of_two() -> dict:
    x = hunyuan_video_inputs(GRID, batch=2)
    x["encoder_attention_mask"][1, -1] = 0  # the second prompt is a token shorter: a masked text token
    return x


def sample(x: dict, i: int) -> dict:
    return {k: v[i : i + 1] if isinstance(v, torch.Tensor) else v for k, v in x.items()}


def run(model, x, times):
    with torch.no_grad():
        return model(**x, timestep=torch.tensor(times))[0]


def attentions(model) -> list:
    return [m for m in model.modules() if hasattr(m, "set_processor")]


def test_a_mixed_batch_above_the_base_grid_equals_each_sample_alone():
    model, x = tiny_hunyuan_video(), inputs_of_two()
    tables = []
    with dype_rope.patch(model, base_grid=BASE):
        h = model.rope.register_forward_hook(lambda m, a, out: tables.append(out))
        mixed = run(model, x, TIMES)
        alone = [run(model, sample(x, i), (t,)) for i, t in enumerate(TIMES)]
        h.remove()
    assert not torch.allclose(alone[0], alone[1])
    for i, own in enumerate(alone):
        # the projections run as one batched GEMM instead of two: the rounding of their sums may differ
        torch.testing.assert_close(mixed[i : i + 1], own, rtol=1e-5, atol=1e-5)
    (cos, sin), own = tables[0], tables[1:]
    assert cos.shape[0] == 2 and not torch.equal(cos[0], cos[1])
    for i, (c, s) in enumerate(own):  # a sample alone: one plan, the stock tables' shape [S, D]
        assert c.dim() == 2 and torch.equal(cos[i], c) and torch.equal(sin[i], s)


def test_a_batch_sharing_one_time_is_the_stock_processors_with_one_plan_bit_for_bit():
    # fresh stock processors set after patching take shared tables: one plan for the call, the stock code.
    # The per-sample copies given per-sample tables of one time must give the very same bits.
    model, x = tiny_hunyuan_video(), inputs_of_two()
    with dype_rope.patch(model, base_grid=BASE):
        per_sample = run(model, x, (500.0, 500.0))
        for attn in attentions(model):
            if isinstance(attn.processor, PerSampleHunyuanVideoAttnProcessor):
                attn.set_processor(hv.HunyuanVideoAttnProcessor2_0())
        stock_processors = run(model, x, (500.0, 500.0))
    assert torch.equal(per_sample, stock_processors)


@pytest.mark.parametrize("times", [(500.0, 500.0), TIMES])
def test_at_or_below_the_base_grid_any_batch_is_the_stock_model(times):
    model, x = tiny_hunyuan_video(), inputs_of_two()
    stock = run(model, x, times)
    with dype_rope.patch(model, base_grid=(6, 8)):
        assert torch.equal(run(model, x, times), stock)


def test_one_compiled_graph_whatever_the_times():
    model, x = tiny_hunyuan_video(), inputs_of_two()
    pairs = (TIMES, TIMES[::-1], (500.0, 500.0))
    assert_one_graph_across_times(model, lambda m, p: run(m, x, p), pairs, BASE)


def test_remove_restores_the_processors_and_nothing_global_changes(monkeypatch):
    monkeypatch.setattr(adapter, "_PROBED", {})  # the install runs its probe here
    model, other = tiny_hunyuan_video(), tiny_hunyuan_video()
    before = [a.processor for a in attentions(model)]
    stock_call = hv.HunyuanVideoAttnProcessor2_0.__call__
    rng = torch.get_rng_state()
    handle = dype_rope.patch(model, base_grid=BASE)
    assert torch.equal(torch.get_rng_state(), rng)  # the install probe keeps the global random state
    mine = [a.processor for a in attentions(model)]
    assert sum(isinstance(p, PerSampleHunyuanVideoAttnProcessor) for p in mine) == 2  # dual and single stream
    assert all(type(p) is not PerSampleHunyuanVideoAttnProcessor for p in (a.processor for a in attentions(other)))
    assert hv.HunyuanVideoAttnProcessor2_0.__call__ is stock_call
    handle.remove()
    assert all(p is b for p, b in zip((a.processor for a in attentions(model)), before))


def test_a_processor_set_after_patching_falls_back_to_one_plan_per_call():
    model = tiny_hunyuan_video()
    with dype_rope.patch(model, base_grid=BASE):
        model.transformer_blocks[0].attn.set_processor(hv.HunyuanVideoAttnProcessor2_0())
        with pytest.raises(ValueError, match="all samples of a batch must share one diffusion time"):
            run(model, inputs_of_two(), TIMES)


def test_a_per_sample_copy_that_differs_from_the_stock_processor_is_caught_at_install(monkeypatch):
    # what a diffusers release would look like to the copy: the stock processor now does one thing differently
    # (here the copy skips the key norm). The probe must see it; the model keeps its stock processors.
    class Diverged(PerSampleHunyuanVideoAttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
            norm_k, attn.norm_k = attn.norm_k, None
            try:
                return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
            finally:
                attn.norm_k = norm_k

    monkeypatch.setattr(adapter, "_PROBED", {})
    monkeypatch.setattr(adapter, "PerSampleHunyuanVideoAttnProcessor", Diverged)
    model = tiny_hunyuan_video()
    with pytest.warns(RuntimeWarning, match="HunyuanVideo's stock attention processor no longer matches"):
        handle = dype_rope.patch(model, base_grid=BASE)
    with handle:
        assert all(not isinstance(a.processor, PerSampleHunyuanVideoAttnProcessor) for a in attentions(model))
        with pytest.raises(ValueError, match="all samples of a batch must share one diffusion time"):
            run(model, inputs_of_two(), TIMES)
