"""FLUX with backend="triton" (the fused kernels, here under the Triton interpreter) against backend="torch":
same outputs, one compiled graph, exact round trip, refused processors."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor, FluxIPAdapterAttnProcessor
from torch._dynamo.testing import CompileCounterWithBackend

import dype_rope
from adapter_checks import assert_same_state, state_of
from dype_rope.adapters.flux_fused import FusedFluxAttnProcessor, FusedFluxPosEmbed
from tiny_models import flux_inputs, tiny_flux

GRID = (4, 5)  # 20 image tokens: the interpreter runs one program per token
BASE = (2, 2)  # so that the image is larger than the base grid and DyPE really rescales


def attentions(model):
    return [m for m in model.modules() if isinstance(m, FluxAttention)]


def run(model, t, backend, dtype=torch.float32):
    inputs = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in flux_inputs(*GRID, t=t, text_len=3, model=model).items()}
    with torch.no_grad(), dype_rope.patch(model, base_grid=BASE, backend=backend):
        return model(**inputs).sample


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_backend_matches_torch_backend(dtype):
    model = tiny_flux().to(dtype)
    fused, eager = run(model, 0.6, "triton", dtype), run(model, 0.6, "torch", dtype)
    # the kernels keep q and k in float32 between norm and rotation (diffusers rounds to the model dtype there):
    # allow a few roundings of the model dtype, relative to the output's scale
    tol = 4 * torch.finfo(dtype).eps * eager.float().abs().max()
    assert (fused.float() - eager.float()).abs().max() <= tol


def test_dype_changes_the_fused_output():
    """Not a vacuous match: the rescaled plan reaches the kernels (a different t gives a different output)."""
    model = tiny_flux()
    assert not torch.allclose(run(model, 1.0, "triton"), run(model, 0.05, "triton"), atol=1e-4)


def test_one_graph_across_steps():
    model = tiny_flux()
    counter = CompileCounterWithBackend("aot_eager")
    with torch.no_grad(), dype_rope.patch(model, base_grid=BASE, backend="triton"):
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        outs = [compiled(**flux_inputs(*GRID, t=t, text_len=3)).sample for t in (1.0, 0.5)]
        want = model(**flux_inputs(*GRID, t=0.5, text_len=3)).sample
    assert counter.frame_count == 1
    torch.testing.assert_close(outs[1], want)


def test_remove_restores_the_original_objects():
    model = tiny_flux()
    before = state_of(model)
    pos_embed = model.pos_embed
    processors = [a.processor for a in attentions(model)]
    handle = dype_rope.patch(model, base_grid=BASE, backend="triton")
    assert isinstance(model.pos_embed, FusedFluxPosEmbed)
    assert all(type(a.processor) is FusedFluxAttnProcessor for a in attentions(model))
    handle.remove()
    assert model.pos_embed is pos_embed
    assert all(a.processor is p for a, p in zip(attentions(model), processors))
    assert_same_state(before, state_of(model))


def test_unsupported_processor_is_refused_and_nothing_changes():
    model = tiny_flux()
    attn = attentions(model)[0]
    custom = FluxIPAdapterAttnProcessor(hidden_size=32, cross_attention_dim=32, num_tokens=(1,))
    attn.set_processor(custom)
    before = state_of(model)
    pos_embed = model.pos_embed
    with pytest.raises(TypeError, match="FluxIPAdapterAttnProcessor.*backend='torch'"):
        dype_rope.patch(model, base_grid=BASE, backend="triton")
    assert model.pos_embed is pos_embed and attn.processor is custom
    assert not dype_rope.is_patched(model)
    assert_same_state(before, state_of(model))


def test_table_path_matches_the_stock_processor():
    """Called with diffusers' (cos, sin) tables, the fused processor rotates through the table kernel and gives
    what FluxAttnProcessor gives."""
    model = tiny_flux()
    attn = attentions(model)[0]  # a joint (text + image) attention
    g = torch.Generator().manual_seed(0)
    hidden, text = torch.randn(1, 6, 32, generator=g), torch.randn(1, 3, 32, generator=g)
    cos, sin = dype_rope.rope_tables(torch.randint(0, 40, (9, 3)).float(), dype_rope.plain_plan((4, 6, 6), 10000.0))
    with torch.no_grad():
        want = FluxAttnProcessor()(attn, hidden, text, image_rotary_emb=(cos, sin))
        got = FusedFluxAttnProcessor("triton")(attn, hidden, text, image_rotary_emb=(cos, sin))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
