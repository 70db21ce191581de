"""FLUX.2 with backend="triton" (the fused kernels, here under the Triton interpreter) against backend="torch":
same outputs, one compiled graph, exact round trip, refused processors, and the table path of the processors."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.transformers.transformer_flux2 import (
    Flux2Attention,
    Flux2AttnProcessor,
    Flux2KVAttnProcessor,
    Flux2ParallelSelfAttention,
    Flux2ParallelSelfAttnProcessor,
)
from torch._dynamo.testing import CompileCounterWithBackend

import dype_rope
from adapter_checks import assert_same_state, state_of
from dype_rope.adapters.flux2_fused import (
    FusedFlux2AttnProcessor,
    FusedFlux2ParallelSelfAttnProcessor,
    FusedFlux2PosEmbed,
)
from tiny_flux2 import flux2_inputs, tiny_flux2

GRID = (4, 5)  # 20 image tokens: the interpreter runs one program per token
BASE = (2, 2)  # so that the image is larger than the base grid and DyPE really rescales
FUSED = {Flux2Attention: FusedFlux2AttnProcessor, Flux2ParallelSelfAttention: FusedFlux2ParallelSelfAttnProcessor}


def attentions(model):
    return [m for m in model.modules() if isinstance(m, (Flux2Attention, Flux2ParallelSelfAttention))]


def run(model, t, backend, dtype=torch.float32, cond=None):
    inputs = flux2_inputs(*GRID, t=t, text_len=3, cond=cond)
    inputs = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}
    with torch.no_grad(), dype_rope.patch(model, base_grid=BASE, backend=backend):
        return model(**inputs).sample


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_backend_matches_torch_backend(dtype):
    model = tiny_flux2().to(dtype)
    # a reference image on time index 10 keeps its own positions: the kernels must read all four axes
    fused, eager = run(model, 0.6, "triton", dtype, cond=(2, 3)), run(model, 0.6, "torch", dtype, cond=(2, 3))
    # the kernels keep q and k in float32 between norm and rotation (diffusers rounds to the model dtype there):
    # allow a few roundings of the model dtype, relative to the output's scale
    tol = 4 * torch.finfo(dtype).eps * eager.float().abs().max()
    assert (fused.float() - eager.float()).abs().max() <= tol


def test_dype_changes_the_fused_output():
    """Not a vacuous match: the rescaled plan reaches the kernels (a different t gives a different output)."""
    model = tiny_flux2()
    assert not torch.allclose(run(model, 1.0, "triton"), run(model, 0.05, "triton"), atol=1e-4)


def test_one_graph_across_steps():
    model = tiny_flux2()
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    with torch.no_grad(), dype_rope.patch(model, base_grid=BASE, backend="triton"):
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        outs = [compiled(**flux2_inputs(*GRID, t=t, text_len=3)).sample for t in (1.0, 0.5)]
        want = model(**flux2_inputs(*GRID, t=0.5, text_len=3)).sample
    torch._dynamo.reset()
    assert counter.frame_count == 1
    torch.testing.assert_close(outs[1], want)


def test_remove_restores_the_original_objects():
    model = tiny_flux2()
    before = state_of(model)
    pos_embed = model.pos_embed
    processors = [a.processor for a in attentions(model)]
    handle = dype_rope.patch(model, base_grid=BASE, backend="triton")
    assert isinstance(model.pos_embed, FusedFlux2PosEmbed)
    assert all(type(a.processor) is FUSED[type(a)] for a in attentions(model))
    handle.remove()
    assert model.pos_embed is pos_embed
    assert all(a.processor is p for a, p in zip(attentions(model), processors))
    assert_same_state(before, state_of(model))


def test_unsupported_processor_is_refused_and_nothing_changes():
    model = tiny_flux2()
    attn = next(a for a in attentions(model) if isinstance(a, Flux2Attention))
    custom = Flux2KVAttnProcessor()
    attn.set_processor(custom)
    before = state_of(model)
    pos_embed = model.pos_embed
    with pytest.raises(TypeError, match="Flux2KVAttnProcessor.*backend='torch'"):
        dype_rope.patch(model, base_grid=BASE, backend="triton")
    assert model.pos_embed is pos_embed and attn.processor is custom
    assert not dype_rope.is_patched(model)
    assert_same_state(before, state_of(model))


@pytest.mark.parametrize("kind", [Flux2Attention, Flux2ParallelSelfAttention], ids=lambda c: c.__name__)
def test_table_path_matches_the_stock_processor(kind):
    """Called with diffusers' (cos, sin) tables, the fused processors rotate through the table kernel and give
    what the stock processors give."""
    model = tiny_flux2()
    attn = next(a for a in attentions(model) if isinstance(a, kind))
    g = torch.Generator().manual_seed(0)
    hidden, text = torch.randn(1, 6, 64, generator=g), torch.randn(1, 3, 64, generator=g)
    positions = torch.randint(0, 40, (9, 4)).float()
    cos, sin = dype_rope.rope_tables(positions, dype_rope.plain_plan((8, 8, 8, 8), 2000.0))

    def no_plan():
        raise AssertionError("the table path must not ask for a plan")

    with torch.no_grad():
        if kind is Flux2Attention:
            want = Flux2AttnProcessor()(attn, hidden, text, image_rotary_emb=(cos, sin))
            got = FusedFlux2AttnProcessor(no_plan)(attn, hidden, text, image_rotary_emb=(cos, sin))
        else:
            joint = torch.cat([text, hidden], dim=1)
            want = (Flux2ParallelSelfAttnProcessor()(attn, joint, image_rotary_emb=(cos, sin)),)
            got = (FusedFlux2ParallelSelfAttnProcessor(no_plan)(attn, joint, image_rotary_emb=(cos, sin)),)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
