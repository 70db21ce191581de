"""Inputs at the edges of what pipelines send: no image tokens, bf16 position ids, batches whose samples carry
different timesteps, Qwen-Image's img_shapes given per sample, and Qwen-Image-Layered."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing

import dype_rope
from dype_rope.adapters.base import image_spans
from families.angles_ernie import ERNIE_IMAGE
from families.cogview4 import cogview4_inputs, tiny_cogview4
from families.flux import FLUX, flux_img_ids, tiny_flux
from families.hidream import HIDREAM, tiny_hidream
from families.ltx2 import LTX2, tiny_ltx2
from families.lumina2 import LUMINA2, tiny_lumina2
from families.qwen_image import QWEN_IMAGE, tiny_qwen_image
from families.row import encoding_calls
from families.sd3 import SD3, tiny_sd3
from families.video import WAN, hunyuan_video_inputs, tiny_hunyuan_video, tiny_wan
from torch.utils._pytree import tree_leaves

BASE = (8, 8)


def run(model, inputs):
    with torch.no_grad():
        return model(**{**inputs, "return_dict": False})[0]


def batch_of(inputs: dict, times, time_key: str = "timestep") -> dict:
    """`inputs` for one sample repeated over len(times) samples, sample i at time times[i]."""
    n = len(times)
    out = {}
    for k, v in inputs.items():
        if k == time_key:
            out[k] = torch.tensor(times, dtype=v.dtype)
        elif isinstance(v, torch.Tensor) and k not in ("img_ids", "txt_ids"):
            dim = 1 if k == "encoder_hidden_states_llama3" else 0  # HiDream: [layers, batch, ...]
            out[k] = torch.cat([v] * n, dim=dim)
        elif k == "img_shapes":
            out[k] = v * n
        else:
            out[k] = v
    return out


# -- zero image tokens -------------------------------------------------------------------------------------

def test_flux_with_no_image_tokens_returns_what_stock_returns():
    model = tiny_flux()
    x = FLUX.inputs((0, 0), 0.5)
    stock = run(model, x)
    with dype_rope.patch(model, base_grid=BASE):
        out = run(model, x)
    assert out.shape == stock.shape == (1, 0, 4) and torch.equal(out, stock)


def test_no_image_tokens_have_zero_extent():
    assert image_spans(torch.zeros(0, 3)).tolist() == [0.0, 0.0, 0.0]


# -- bf16 position ids (FluxPipeline casts ids to the latents' dtype) ------------------------------------------

def test_extents_from_bf16_ids_are_exact():
    ids = flux_img_ids(512, 512).bfloat16()
    assert ids[:, 1].float().amax().item() == 512.0  # 511 rounds up: the maximum says 513 rows
    assert image_spans(ids).tolist() == [1.0, 512.0, 512.0]
    assert image_spans(flux_img_ids(300, 7).half()).tolist() == [1.0, 300.0, 7.0]


def test_flux_with_bf16_ids_plans_for_the_true_grid():
    # 512 rows x 2 columns: the rows (s = 8 against 64) are rescaled; bf16 ids round row 511 to 512. Rows below 256
    # are exact in bf16, so their tables must equal those of exact float32 ids: the same plan.
    model = tiny_flux()
    x = FLUX.inputs((512, 2), 0.9)
    tables = []
    with dype_rope.patch(model, base_grid=(64, 64)):
        h = model.pos_embed.register_forward_hook(lambda m, a, out: tables.append(out[0]))
        run(model, x)
        run(model, {**x, "img_ids": x["img_ids"].bfloat16(), "txt_ids": x["txt_ids"].bfloat16()})
        h.remove()
    exact_rows = 5 + 2 * 256  # text tokens, then the image rows 0 .. 255
    assert torch.equal(tables[0][:exact_rows], tables[1][:exact_rows])


# -- batches whose samples carry different timesteps ----------------------------------------------------------

# (builder, one-sample inputs at a size, name of the timestep argument, its value for t = 0.2 and 0.8); the
# one-sample inputs carry the time argument at t = 1, which batch_of replaces
FAMILIES = {
    "flux": (tiny_flux, lambda h, w: FLUX.inputs((h, w), 1.0), "timestep", (0.2, 0.8)),
    "lumina2": (tiny_lumina2, lambda h, w: LUMINA2.inputs((h, w), 1.0), "timestep", (0.8, 0.2)),  # 0 = noise
    "hidream": (tiny_hidream, lambda h, w: HIDREAM.inputs((h, w), 1.0), "timesteps", (200.0, 800.0)),
    "qwen-image": (tiny_qwen_image, lambda h, w: QWEN_IMAGE.inputs((h, w), 1.0), "timestep", (0.2, 0.8)),
    "wan": (tiny_wan, lambda h, w: WAN.inputs((2, h, w), 1.0), "timestep", (200.0, 800.0)),
    "sd3": (tiny_sd3, lambda h, w: SD3.inputs((h, w), 1.0), "timestep", (200.0, 800.0)),
    "ernie-image": (ERNIE_IMAGE.build, lambda h, w: ERNIE_IMAGE.inputs((h, w), 1.0), "timestep", (200.0, 800.0)),
    "ltx2": (tiny_ltx2, lambda h, w: LTX2.inputs((2, h, w), 1.0), "timestep", (200.0, 800.0)),
    "cogview4": (tiny_cogview4, lambda h, w: {**cogview4_inputs((h, w)), "timestep": torch.tensor([1000.0])},
                 "timestep", (200.0, 800.0)),
    "hunyuan_video": (tiny_hunyuan_video, lambda h, w: {**hunyuan_video_inputs((2, h, w)), "timestep": torch.tensor([1000.0])},
                      "timestep", (200.0, 800.0)),
}
# families whose tables carry a batch dimension (the attribute of their position encoding): one plan per sample
PER_SAMPLE = {
    "lumina2": "rope_embedder", "hidream": "pe_embedder", "wan": "rope", "sd3": "pos_embed", "flux": "pos_embed",
    "qwen-image": "pos_embed", "ltx2": "rope",
    "ernie-image": "pos_embed",  # angles [B, L, 1, D]; the attention factor per sample in the processor
    "hunyuan_video": "rope",  # tables [B, F*H*W, D] through per-sample copies of its stock processors
}


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_times_at_or_below_the_base_grid_pass_through(family):
    build, inputs, key, times = FAMILIES[family]
    model = build()
    x = batch_of(inputs(6, 8), times, key)
    stock = run(model, x)
    with dype_rope.patch(model, base_grid=BASE):
        assert torch.equal(run(model, x), stock)


def test_mixed_times_at_or_below_the_base_grid_pass_through_when_compiled():
    # compiled, the batch's times are never read on the host (as on CUDA): still a pass-through
    model = tiny_flux()
    x = batch_of(FLUX.inputs((6, 8), 1.0), (0.2, 0.8))
    stock = run(model, x)
    torch._dynamo.reset()
    with dype_rope.patch(model, base_grid=BASE):
        compiled = torch.compile(model, backend=torch._dynamo.testing.CompileCounter(), fullgraph=True)
        assert torch.equal(run(compiled, x), stock)


def recorded_tables(model, encoding: str, inputs: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(output, every tensor the position encoding returned in the call)."""
    out = []
    calls = encoding_calls(model, encoding, lambda: out.append(run(model, inputs)))
    return out[0], [leaf for _, o in calls for leaf in tree_leaves(o) if isinstance(leaf, torch.Tensor)]


@pytest.mark.parametrize("family", PER_SAMPLE)
def test_mixed_times_above_the_base_grid_get_one_plan_per_sample(family):
    """Each sample's tables are bit for bit those of the sample run alone; the outputs agree to the rounding of
    batched matrix products."""
    build, inputs, key, times = FAMILIES[family]
    model = build()
    one = inputs(12, 12)  # square: HiDream pads non-square images to its base token count
    with dype_rope.patch(model, base_grid=BASE):
        batched, tables = recorded_tables(model, PER_SAMPLE[family], batch_of(one, times, key))
        alone = [recorded_tables(model, PER_SAMPLE[family], batch_of(one, (t,), key)) for t in times]
    assert not torch.allclose(alone[0][0], alone[1][0])
    per_sample = [b for b in tables if b.dim() and b.shape[0] == len(times)]
    assert per_sample, "no table with a batch dimension"
    for i, (out, own) in enumerate(alone):
        torch.testing.assert_close(batched[i], out[0], rtol=1e-5, atol=1e-5)
        mine = [b[i : i + 1] for b in per_sample]
        # a sample alone has tables [1, ...], or (FLUX: one time, one plan) the stock tables [L, D] themselves
        theirs = [a for a in own if a.dim() and a.shape[0] == 1] or [a.unsqueeze(0) for a in own]
        assert len(mine) == len(theirs) and all(torch.equal(m, a) for m, a in zip(mine, theirs))


@pytest.mark.parametrize("family", ["wan", "sd3", "ernie-image", "ltx2"])
def test_mixed_times_above_the_base_grid_compile_into_one_graph(family):
    # the times are never read on the host: one graph whatever they are, each sample at its own time
    build, inputs, key, times = FAMILIES[family]
    model = build()
    one = inputs(12, 12)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounter()
    with dype_rope.patch(model, base_grid=BASE):
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for pair in (times, times[::-1], (times[0], times[0])):
            x = batch_of(one, pair, key)
            torch.testing.assert_close(run(compiled, x), run(model, x), rtol=1e-6, atol=1e-6)
    torch._dynamo.reset()
    assert counter.frame_count == 1


@pytest.mark.parametrize("family", ["flux", "qwen-image"])
def test_mixed_times_above_the_base_grid_are_refused_on_host_tensors(family):
    # one table per call (here: a processor set after patching, which has no per-sample copy): one time would
    # silently misplan the other samples
    build, inputs, key, times = FAMILIES[family]
    model = build()
    with dype_rope.patch(model, base_grid=BASE):
        attn = next(m for m in model.modules() if hasattr(m, "set_processor"))
        attn.set_processor(type(attn.processor).__mro__[1]())  # the stock class of DyPE's per-sample copy
        with pytest.raises(ValueError, match="all samples of a batch must share one diffusion time where DyPE rescales"):
            run(model, batch_of(inputs(12, 16), times, key))


def test_mixed_times_above_the_base_grid_never_use_the_first_sample_when_compiled():
    # where the times cannot be read for free (compiled, as on CUDA), the rescaled tables become NaN: loud,
    # never the first sample's plan applied to all. FLUX plans per sample unless a processor it has no
    # per-sample copy of is in the model: one set after patching makes it plan once per call.
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    model = tiny_flux()
    x = batch_of(FLUX.inputs((12, 16), 1.0), (0.2, 0.8))
    torch._dynamo.reset()
    with dype_rope.patch(model, base_grid=BASE):
        model.transformer_blocks[0].attn.set_processor(FluxAttnProcessor())
        compiled = torch.compile(model, backend=torch._dynamo.testing.CompileCounter(), fullgraph=True)
        out = run(compiled, x)
        assert torch.isnan(out).all()
        same = batch_of(FLUX.inputs((12, 16), 1.0), (0.8, 0.8))
        torch.testing.assert_close(run(compiled, same), run(model, same), rtol=1e-6, atol=1e-6)


# -- Qwen-Image img_shapes and the layered model ----------------------------------------------------------------

@pytest.mark.parametrize("size", [(6, 8), (12, 16)])
def test_qwen_image_img_shapes_with_one_tuple_per_sample(size):
    # QwenImageControlNetPipeline passes [(1, h, w)] * batch; stock reads the first sample's entry
    model = tiny_qwen_image()
    x = QWEN_IMAGE.inputs(size, 0.6, batch=2)
    per_sample_lists = x["img_shapes"]
    assert per_sample_lists == [[(1, *size)]] * 2
    tuples = {**x, "img_shapes": [(1, *size)] * 2}
    stock = run(model, tuples)
    assert torch.equal(stock, run(model, x))
    with dype_rope.patch(model, base_grid=BASE):
        got = run(model, tuples)
        assert torch.equal(got, run(model, x))
    if size == (6, 8):
        assert torch.equal(got, stock)
    else:
        assert not torch.equal(got, stock)


def test_qwen_image_layered_is_refused_with_its_message():
    model = tiny_qwen_image(use_layer3d_rope=True)
    original = model.pos_embed
    with pytest.raises(TypeError, match=r"use_layer3d_rope=True \(Qwen-Image-Layered\) are not supported; run them unpatched"):
        dype_rope.patch(model)
    assert model.pos_embed is original and not dype_rope.is_patched(model)
