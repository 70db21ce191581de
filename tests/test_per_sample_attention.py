"""One plan per sample through the stock attention processors of FLUX-like families (adapters/per_sample.py):
a batch whose samples sit at different times equals each sample run alone, a batch sharing one time is bit
for bit the stock model at or below the base grid, one compiled graph whatever the times, and remove() puts
back the very processors the model had."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
from diffusers.models import embeddings
from diffusers.models.transformers import transformer_flux

import dype_rope
from dype_rope.adapters.per_sample import Rotary, per_sample_rotary
from families.flux import CHROMA, FLUX, FLUX2
from families.qwen_image import QWEN_IMAGE
from per_sample_checks import assert_one_graph_across_times

ROWS = {row.name: row for row in (FLUX, CHROMA, FLUX2, QWEN_IMAGE)}
# where each family's per-sample tables carry the batch: FLUX.2 concatenates text and image tables on axis 0
TABLE_BATCH_AXIS = {"flux2": 1}
PIPELINE_TIMES = (200.0, 800.0)  # two samples at different steps, in the pipeline's 0..1000 timesteps


def run(model, inputs):
    with torch.no_grad():
        return model(**{**inputs, "return_dict": False})[0]


def batch_of(row, grid, times) -> dict:
    """The row's one-sample inputs repeated over len(times) samples, sample i at pipeline timestep times[i]."""
    one = row.make_inputs(grid, 1, None, 1)
    n = len(times)
    out = {}
    for k, v in one.items():
        if isinstance(v, torch.Tensor) and k not in ("img_ids", "txt_ids"):
            out[k] = torch.cat([v] * n)
        elif k == "img_shapes":
            out[k] = v * n
        else:
            out[k] = v
    out[row.time_arg] = row.pipeline_time(torch.tensor(times, dtype=torch.float32))
    return out


def processors(model) -> list:
    return [m.processor for m in model.modules() if hasattr(m, "set_processor")]


@pytest.mark.parametrize("name", ROWS)
def test_mixed_times_above_the_base_grid_equal_each_sample_alone(name):
    row = ROWS[name]
    model = row.build()
    with dype_rope.patch(model, base_grid=row.base):
        mixed = run(model, batch_of(row, row.above, PIPELINE_TIMES))
        alone = [run(model, batch_of(row, row.above, (t,))) for t in PIPELINE_TIMES]
    assert not torch.allclose(alone[0], alone[1])
    for i, own in enumerate(alone):
        # the projections run as one batched GEMM instead of two: the rounding of their sums may differ
        torch.testing.assert_close(mixed[i : i + 1], own, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ROWS)
def test_a_batch_sharing_one_time_is_the_stock_model_at_or_below_the_base_grid(name):
    row = ROWS[name]
    model = row.build()
    for grid, base in row.below:
        for times in ((500.0, 500.0), (200.0, 800.0)):
            x = batch_of(row, grid, times)
            stock = run(model, x)
            with dype_rope.patch(model, base_grid=base):
                assert torch.equal(run(model, x), stock)


@pytest.mark.parametrize("name", ROWS)
def test_each_sample_is_rotated_by_its_own_plan(name):
    # against the stock processor given the sample's own [S, D] tables: the rotation of every element is the
    # stock expression on the same operands, so the attention inputs agree bit for bit
    row = ROWS[name]
    axis = TABLE_BATCH_AXIS.get(name, 0)
    model = row.build()
    runs = []
    with dype_rope.patch(model, base_grid=row.base):
        h = model.pos_embed.register_forward_hook(lambda m, a, out: runs[-1].append(out))
        for times in (PIPELINE_TIMES, *((t,) for t in PIPELINE_TIMES)):
            runs.append([])
            run(model, batch_of(row, row.above, times))
        h.remove()
    mixed, own = runs[0], runs[1:]
    for i, alone in enumerate(own):
        for (cos, sin), (c, s) in zip(mixed, alone, strict=True):
            # a sample alone has one time: one plan for the call, the stock tables' own shape [L, D]
            assert cos.shape[axis] == len(PIPELINE_TIMES) and c.dim() == 2
            assert torch.equal(cos.select(axis, i), c) and torch.equal(sin.select(axis, i), s)
    assert not torch.equal(mixed[0][0].select(axis, 0), mixed[0][0].select(axis, 1))


@pytest.mark.parametrize("name", ["flux", "flux2", "qwen-image"])
def test_one_compiled_graph_whatever_the_times(name):
    row = ROWS[name]
    model = row.build()
    pairs = ((200.0, 800.0), (800.0, 200.0), (200.0, 200.0))
    assert_one_graph_across_times(model, lambda m, p: run(m, batch_of(row, row.above, p)), pairs, row.base)


def test_remove_restores_the_processors_and_nothing_global_changes():
    model, other = FLUX.build(), FLUX.build()
    before = processors(model)
    stock_call = transformer_flux.FluxAttnProcessor.__call__
    stock_rotary = transformer_flux.apply_rotary_emb
    handle = dype_rope.patch(model, base_grid=FLUX.base)
    mine = processors(model)
    assert all(isinstance(p, transformer_flux.FluxAttnProcessor) and p is not b for p, b in zip(mine, before))
    assert all(type(p) is transformer_flux.FluxAttnProcessor for p in processors(other))
    assert transformer_flux.FluxAttnProcessor.__call__ is stock_call
    assert transformer_flux.apply_rotary_emb is stock_rotary is embeddings.apply_rotary_emb
    handle.remove()
    assert all(p is b for p, b in zip(processors(model), before))


def test_a_processor_set_after_patching_keeps_it_and_falls_back_to_one_plan_per_call():
    # a processor DyPE has no per-sample copy of takes shared tables only: the call plans once and refuses a
    # mixed batch it can read for free instead of handing that processor tables it cannot broadcast
    model = FLUX.build()
    with dype_rope.patch(model, base_grid=FLUX.base):
        attn = model.transformer_blocks[0].attn
        user = transformer_flux.FluxAttnProcessor()
        attn.set_processor(user)
        same = batch_of(FLUX, FLUX.above, (500.0, 500.0))
        assert torch.isfinite(run(model, same)).all()
        with pytest.raises(ValueError, match="all samples of a batch must share one diffusion time"):
            run(model, batch_of(FLUX, FLUX.above, PIPELINE_TIMES))
    assert attn.processor is user


@pytest.mark.parametrize("sequence_dim", [1, 2])
@pytest.mark.parametrize("unbind", [-1, -2])
def test_the_folded_rotary_is_the_stock_one_per_sample(sequence_dim, unbind):
    g = torch.Generator().manual_seed(0)
    b, s, h, d = 3, 5, 2, 8
    shape = (b, s, h, d) if sequence_dim == 1 else (b, h, s, d)
    x = torch.randn(shape, generator=g, dtype=torch.bfloat16)
    cos, sin = torch.randn(b, s, d, generator=g), torch.randn(b, s, d, generator=g)
    rotate = per_sample_rotary(embeddings.apply_rotary_emb, Rotary("apply_rotary_emb", "sequence_dim"))
    out = rotate(x, (cos, sin), use_real_unbind_dim=unbind, sequence_dim=sequence_dim)
    for i in range(b):
        own = embeddings.apply_rotary_emb(x[i : i + 1], (cos[i], sin[i]), True, unbind, sequence_dim)
        assert torch.equal(out[i : i + 1], own)
    shared = rotate(x, (cos[0], sin[0]), sequence_dim=sequence_dim, use_real_unbind_dim=unbind)
    assert torch.equal(shared, embeddings.apply_rotary_emb(x, (cos[0], sin[0]), True, unbind, sequence_dim))


def test_the_folded_complex_rotary_is_qwen_images_own_per_sample():
    from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

    from dype_rope.adapters.qwen_image import QWEN_ROTARY

    g = torch.Generator().manual_seed(0)
    b, s, h, d = 3, 5, 2, 8
    x = torch.randn(b, s, h, d, generator=g, dtype=torch.bfloat16)
    freqs = torch.polar(torch.rand(b, s, d // 2, generator=g), torch.randn(b, s, d // 2, generator=g))
    rotate = per_sample_rotary(apply_rotary_emb_qwen, QWEN_ROTARY)
    out = rotate(x, freqs, use_real=False)
    for i in range(b):
        assert torch.equal(out[i : i + 1], apply_rotary_emb_qwen(x[i : i + 1], freqs[i], use_real=False))


def test_qwen_image_under_a_parallel_plan_plans_once_per_call():
    # its parallel plan splits the embedding's outputs as [N, D/2]: per-sample tables would not be split
    model = QWEN_IMAGE.build()
    with dype_rope.patch(model, base_grid=QWEN_IMAGE.base):
        mixed = batch_of(QWEN_IMAGE, QWEN_IMAGE.above, PIPELINE_TIMES)
        assert torch.isfinite(run(model, mixed)).all()
        model._parallel_config = object()  # what enable_parallelism sets (the model is never run split here)
        try:
            with pytest.raises(ValueError, match="all samples of a batch must share one diffusion time"):
                run(model, mixed)
        finally:
            del model._parallel_config


def test_the_flux_controlnet_plans_per_sample_too():
    # FluxControlNetModel carries FLUX's pos_embed and processors: each sample's residuals at its own time
    from families.flux import flux_img_ids
    from families.tiny import tiny

    config = dict(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                  num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6))
    net = tiny("FluxControlNetModel", config)
    with torch.no_grad():  # its output projections start at zero: random ones make the residuals depend on t
        for name, p in net.named_parameters():
            if name.startswith("controlnet_"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.1)
    g = torch.Generator().manual_seed(3)
    h, w, text = 12, 12, 5

    def inputs(times):
        n = len(times)
        x = torch.randn(1, h * w, 4, generator=torch.Generator().manual_seed(4))
        return dict(hidden_states=x.repeat(n, 1, 1), controlnet_cond=x.repeat(n, 1, 1),
                    encoder_hidden_states=enc.repeat(n, 1, 1), pooled_projections=pooled.repeat(n, 1),
                    timestep=torch.tensor(times), img_ids=flux_img_ids(h, w), txt_ids=torch.zeros(text, 3),
                    return_dict=False)

    enc, pooled = torch.randn(1, text, 32, generator=g), torch.randn(1, 16, generator=g)
    with dype_rope.patch(net, base_grid=(8, 8)), torch.no_grad():
        mixed = net(**inputs((0.2, 0.8)))
        alone = [net(**inputs((t,))) for t in (0.2, 0.8)]
    blocks = [b for part in mixed if part is not None for b in part]
    assert blocks
    for i, own in enumerate(alone):
        theirs = [b for part in own if part is not None for b in part]
        for m, a in zip(blocks, theirs, strict=True):
            torch.testing.assert_close(m[i : i + 1], a, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(alone[0][0][0], alone[1][0][0])
