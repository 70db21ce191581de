"""One plan per sample for Z-Image, whose model embeds the ids of all samples concatenated: the patch notes each
sample's id count from the model's own per-sample list, and each sample's rows take its own plan. A mixed batch
(captions of different lengths too) equals each sample run alone, a batch sharing one time gives the one-plan
tables bit for bit, at or below the base grid any batch is the stock model, one compiled graph whatever the
times, and remove() leaves the instance and its class as they were."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
from diffusers.models.transformers.transformer_z_image import ZImageTransformer2DModel

import dype_rope
from dype_rope.adapters.zimage import per_sample_table
from dype_rope.rope import RopePlan
from families.row import encoding_calls
from families.zimage import ZIMAGE, tiny_zimage, zimage_inputs
from per_sample_checks import assert_one_graph_across_times

TIMES = (0.3, 0.7)  # what the pipeline passes: (1000 - timestep) / 1000, 0 = noise


def inputs_of_two() -> dict:
    x = zimage_inputs(ZIMAGE.above, batch=2)
    x["cap_feats"][1] = x["cap_feats"][1][:3]  # another caption length: other id counts, padding, a mask
    return x


def sample(x: dict, i: int) -> dict:
    return {k: v[i : i + 1] for k, v in x.items()}


def run(model, x, times):
    with torch.no_grad():
        return torch.stack(model(**x, t=torch.tensor(times), return_dict=False)[0])


def tables_of(model, x, times) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out = []
    calls = encoding_calls(model, "rope_embedder", lambda: out.append(run(model, x, times)))
    return out[0], [table for _, table in calls]


def test_a_mixed_batch_above_the_base_grid_equals_each_sample_alone():
    model, x = tiny_zimage(), inputs_of_two()
    with dype_rope.patch(model, base_grid=ZIMAGE.base):
        mixed, tables = tables_of(model, x, TIMES)
        alone = [tables_of(model, sample(x, i), (t,)) for i, t in enumerate(TIMES)]
    assert not torch.allclose(alone[0][0], alone[1][0])
    for i, (out, _) in enumerate(alone):
        # the projections run as one batched GEMM instead of two: the rounding of their sums may differ
        torch.testing.assert_close(mixed[i : i + 1], out, rtol=1e-5, atol=1e-5)
    # every embedder call (image ids, caption ids) holds sample 0's rows, then sample 1's: each its own tables
    for k, table in enumerate(tables):
        own = [a[1][k] for a in alone]
        assert torch.equal(table, torch.cat(own))
    assert not torch.equal(alone[0][1][0], alone[1][1][0])


def test_a_batch_sharing_one_time_gives_the_one_plan_tables_bit_for_bit():
    model, x = tiny_zimage(), inputs_of_two()
    with dype_rope.patch(model, base_grid=ZIMAGE.base):
        _, tables = tables_of(model, x, (0.5, 0.5))
        alone = [tables_of(model, sample(x, i), (0.5,))[1] for i in range(2)]
    for k, table in enumerate(tables):
        assert torch.equal(table, torch.cat([a[k] for a in alone]))


@pytest.mark.parametrize("times", [(0.5, 0.5), TIMES])
def test_at_or_below_the_base_grid_any_batch_is_the_stock_model(times):
    model, x = tiny_zimage(), inputs_of_two()
    stock = run(model, x, times)
    with dype_rope.patch(model, base_grid=(8, 10)):  # the grid is 6 x 10 tokens
        assert torch.equal(run(model, x, times), stock)


def test_one_compiled_graph_whatever_the_times():
    model, x = tiny_zimage(), zimage_inputs(ZIMAGE.above, batch=2)
    pairs = (TIMES, TIMES[::-1], (0.5, 0.5))
    assert_one_graph_across_times(model, lambda m, p: run(m, x, p), pairs, ZIMAGE.base)


def test_remove_leaves_the_instance_and_its_class_as_they_were():
    model, x = tiny_zimage(), inputs_of_two()
    stock_method, embedder = ZImageTransformer2DModel._prepare_sequence, model.rope_embedder
    before = run(model, x, TIMES)
    handle = dype_rope.patch(model, base_grid=ZIMAGE.base)
    assert "_prepare_sequence" in vars(model) and ZImageTransformer2DModel._prepare_sequence is stock_method
    assert "_prepare_sequence" not in vars(tiny_zimage())
    assert not torch.equal(run(model, x, TIMES), before)
    handle.remove()
    assert "_prepare_sequence" not in vars(model) and model.rope_embedder is embedder
    assert torch.equal(run(model, x, TIMES), before)


def test_ids_that_do_not_match_the_models_sample_counts_are_an_error():
    ids = torch.zeros(10, 3, dtype=torch.long)
    plan = RopePlan(torch.ones(2, 16, dtype=torch.float64), torch.ones(2, 16, dtype=torch.float64),
                    torch.zeros(16, dtype=torch.long))
    assert per_sample_table(ids, plan, [4, 6]).shape == (10, 16)
    for counts in (None, [4, 5], [10]):
        with pytest.raises(RuntimeError, match="cannot tell the samples apart"):
            per_sample_table(ids, plan, counts)


def test_the_wrapped_method_neither_keeps_a_dropped_model_alive_nor_survives_copy_or_pickle():
    import copy
    import gc
    import io
    import weakref

    model = tiny_zimage()
    handle = dype_rope.patch(model, base_grid=ZIMAGE.base)
    run(model, inputs_of_two(), TIMES)
    with pytest.raises(TypeError, match="deepcopy of a model patched by dype_rope"):
        copy.deepcopy(model)
    with pytest.raises(TypeError, match="cannot be pickled"):
        torch.save(model, io.BytesIO())
    handle.remove()
    torch.save(copy.deepcopy(model), io.BytesIO())  # unpatched: copies and pickles as usual

    dropped = tiny_zimage()
    kept = dype_rope.patch(dropped, base_grid=ZIMAGE.base)
    run(dropped, inputs_of_two(), TIMES)
    ref = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert ref() is None and kept is not None


def test_omni_mode_a_mixed_batch_equals_each_sample_alone():
    # per sample: a conditioning latent of its own size, the generated latent, captions, SigLIP features; three
    # embedder calls per model call, each over both samples' ids
    from families.zimage import zimage_omni_inputs

    model = tiny_zimage(siglip_feat_dim=8)
    a, b = zimage_omni_inputs(4, 6, (10, 10), seed=1), zimage_omni_inputs(4, 6, (8, 6), seed=2)
    x = {k: a[k] + b[k] for k in ("x", "cap_feats", "siglip_feats", "image_noise_mask")}
    with dype_rope.patch(model, base_grid=(2, 3)):
        mixed = run(model, x, TIMES)
        alone = [run(model, sample(x, i), (t,)) for i, t in enumerate(TIMES)]
    assert not torch.allclose(alone[0], alone[1])
    for i, own in enumerate(alone):
        torch.testing.assert_close(mixed[i : i + 1], own, rtol=1e-5, atol=1e-5)
