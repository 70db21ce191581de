"""Qwen-Image with backend="triton" (the fused kernels, here under the Triton interpreter) against
backend="torch": same outputs (conditioning image included), one compiled graph, exact round trip, refused
processors, carried context-parallel hooks, and the complex-table path of the processor."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0
from torch._dynamo.testing import CompileCounterWithBackend

import dype_rope
from adapter_checks import assert_same_state, state_of
from dype_rope.adapters.qwen_image_fused import FusedQwenDoubleStreamAttnProcessor, FusedQwenEmbedRope
from dype_rope.rope_formats import complex_table
from tiny_qwen_image import TINY_QWEN_IMAGE, qwen_inputs, tiny_qwen_image

GRID = (4, 5)  # 20 image tokens: the interpreter runs one program per token
BASE = (2, 2)  # so that the image is larger than the base grid and DyPE really rescales


def attentions(model):
    return [m for m in model.modules() if isinstance(m, Attention)]


def run(model, t, backend, dtype=torch.float32, cond=None):
    inputs = qwen_inputs(*GRID, t=t, text_len=3, cond=cond)
    inputs = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in inputs.items()}
    with torch.no_grad(), dype_rope.patch(model, base_grid=BASE, backend=backend):
        return model(**inputs).sample


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_backend_matches_torch_backend(dtype):
    model = tiny_qwen_image().to(dtype)
    # a Qwen-Image-Edit conditioning image: its tokens sit on frame 1 with their own centred positions
    fused, eager = run(model, 0.6, "triton", dtype, cond=(2, 3)), run(model, 0.6, "torch", dtype, cond=(2, 3))
    # the kernels normalise and rotate in float32 with the plan in full precision (the torch path rounds the
    # frequencies to float32 as Qwen-Image does, and rounds q and k to the model dtype between norm and rotation):
    # allow a few roundings of the model dtype, relative to the output's scale
    tol = 4 * torch.finfo(dtype).eps * eager.float().abs().max()
    assert (fused.float() - eager.float()).abs().max() <= tol


def test_dype_changes_the_fused_output():
    """Not a vacuous match: the rescaled plan reaches the kernels (a different t gives a different output)."""
    model = tiny_qwen_image()
    assert not torch.allclose(run(model, 1.0, "triton"), run(model, 0.05, "triton"), atol=1e-4)


def test_one_graph_across_steps():
    model = tiny_qwen_image()
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    with torch.no_grad(), dype_rope.patch(model, base_grid=BASE, backend="triton"):
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        outs = [compiled(**qwen_inputs(*GRID, t=t, text_len=3)).sample for t in (1.0, 0.5)]
        want = model(**qwen_inputs(*GRID, t=0.5, text_len=3)).sample
    torch._dynamo.reset()
    assert counter.frame_count == 1
    torch.testing.assert_close(outs[1], want)


def test_remove_restores_the_original_objects():
    model = tiny_qwen_image()
    before = state_of(model)
    pos_embed = model.pos_embed
    processors = [a.processor for a in attentions(model)]
    handle = dype_rope.patch(model, base_grid=BASE, backend="triton")
    assert isinstance(model.pos_embed, FusedQwenEmbedRope)
    assert all(type(a.processor) is FusedQwenDoubleStreamAttnProcessor for a in attentions(model))
    handle.remove()
    assert model.pos_embed is pos_embed
    assert all(a.processor is p for a, p in zip(attentions(model), processors))
    assert_same_state(before, state_of(model))


def test_unsupported_processor_is_refused_and_nothing_changes():
    model = tiny_qwen_image()
    attn = attentions(model)[0]
    custom = AttnProcessor2_0()
    attn.set_processor(custom)
    before = state_of(model)
    pos_embed = model.pos_embed
    with pytest.raises(TypeError, match="AttnProcessor2_0.*backend='torch'"):
        dype_rope.patch(model, base_grid=BASE, backend="triton")
    assert model.pos_embed is pos_embed and attn.processor is custom
    assert not dype_rope.is_patched(model)
    assert_same_state(before, state_of(model))


def test_context_parallel_hooks_reach_the_fused_embedding():
    """The split hook diffusers puts on pos_embed shards the positions the fused embedding returns (same first
    dimension as the tables), so it must be carried to it, and the original keeps its own."""
    from diffusers.hooks.context_parallel import ContextParallelSplitHook
    from diffusers.hooks.hooks import HookRegistry

    model = tiny_qwen_image()
    name = "cp_input---pos_embed"
    split = ContextParallelSplitHook(type(model)._cp_plan["pos_embed"], parallel_config=None)
    HookRegistry.check_if_exists_or_initialize(model.pos_embed).register_hook(split, name)
    original = model.pos_embed
    with dype_rope.patch(model, base_grid=BASE, backend="triton"):
        assert isinstance(model.pos_embed, FusedQwenEmbedRope)
        carried = model.pos_embed._diffusers_hook.hooks
        assert list(carried) == [name] and isinstance(carried[name], ContextParallelSplitHook)
    assert model.pos_embed is original and original._diffusers_hook.hooks == {name: split}


def test_complex_table_path_matches_the_stock_processor():
    """Called with Qwen-Image's complex freqs_cis, the fused processor rotates through the table kernel (real and
    imaginary parts as cos and sin) and gives what QwenDoubleStreamAttnProcessor2_0 gives."""
    model = tiny_qwen_image()
    attn = attentions(model)[0]
    dim = TINY_QWEN_IMAGE["attention_head_dim"] * TINY_QWEN_IMAGE["num_attention_heads"]
    g = torch.Generator().manual_seed(0)
    hidden, text = torch.randn(1, 6, dim, generator=g), torch.randn(1, 3, dim, generator=g)
    plan = dype_rope.plain_plan(TINY_QWEN_IMAGE["axes_dims_rope"], 10000.0)
    plan = plan._replace(mscale=torch.full_like(plan.mscale, 1.3))  # a magnitude other than 1 must carry over
    freqs = tuple(complex_table(torch.randint(-20, 20, (n, 3)).float(), plan) for n in (6, 3))

    def no_plan():
        raise AssertionError("the table path must not ask for a plan")

    with torch.no_grad():
        want = QwenDoubleStreamAttnProcessor2_0()(attn, hidden, text, image_rotary_emb=freqs)
        got = FusedQwenDoubleStreamAttnProcessor(no_plan)(attn, hidden, text, image_rotary_emb=freqs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
