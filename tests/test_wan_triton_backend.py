"""Wan with backend="triton" (the rotation through the fused kernels, here under the Triton interpreter) against
backend="torch": same outputs (batch of two), one compiled graph, exact round trip, refused processors, carried
context-parallel hooks, the token positions, and the table path of the processor."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor
from torch._dynamo.testing import CompileCounterWithBackend

import dype_rope
from adapter_checks import assert_same_state, state_of
from dype_rope.adapters.wan_fused import FusedWanAttnProcessor, FusedWanRotaryPosEmbed, grid_positions
from tiny_video import TINY_WAN, tiny_wan, video_positions, wan_inputs

GRID = (2, 3, 4)  # 24 tokens: the interpreter runs one program per token
BASE = (2, 2)  # so that the video is larger than the base grid and DyPE really rescales


def attentions(model):
    return [m for m in model.modules() if isinstance(m, WanAttention)]


def run(model, timestep, backend, dtype=torch.float32, batch=1):
    inputs = wan_inputs(*GRID, timestep=timestep, batch=batch)
    inputs = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in inputs.items()}
    with torch.no_grad(), dype_rope.patch(model, base_grid=BASE, backend=backend):
        return model(**inputs)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_backend_matches_torch_backend(dtype):
    model = tiny_wan().to(dtype)
    fused, eager = run(model, 600.0, "triton", dtype, batch=2), run(model, 600.0, "torch", dtype, batch=2)
    # the kernel rotates in float32 with the plan in full precision: allow a few roundings of the model dtype,
    # relative to the output's scale
    tol = 4 * torch.finfo(dtype).eps * eager.float().abs().max()
    assert (fused.float() - eager.float()).abs().max() <= tol


def test_dype_changes_the_fused_output():
    """Not a vacuous match: the rescaled plan reaches the kernel (a different t gives a different output)."""
    model = tiny_wan()
    assert not torch.allclose(run(model, 999.0, "triton"), run(model, 50.0, "triton"), atol=1e-4)


def test_positions_are_wan_token_order():
    """Frames-major (frame, row, column), the order Wan flattens its latent in."""
    torch.testing.assert_close(grid_positions(GRID, torch.device("cpu")).double(), video_positions(*GRID))


def test_one_graph_across_steps():
    model = tiny_wan()
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    with torch.no_grad(), dype_rope.patch(model, base_grid=BASE, backend="triton"):
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        outs = [compiled(**wan_inputs(*GRID, timestep=ts))[0] for ts in (999.0, 500.0)]
        want = model(**wan_inputs(*GRID, timestep=500.0))[0]
    torch._dynamo.reset()
    assert counter.frame_count == 1
    torch.testing.assert_close(outs[1], want)


def test_remove_restores_the_original_objects():
    model = tiny_wan()
    before = state_of(model)
    rope = model.rope
    processors = [a.processor for a in attentions(model)]
    handle = dype_rope.patch(model, base_grid=BASE, backend="triton")
    assert isinstance(model.rope, FusedWanRotaryPosEmbed)
    assert all(type(a.processor) is FusedWanAttnProcessor for a in attentions(model))
    handle.remove()
    assert model.rope is rope
    assert all(a.processor is p for a, p in zip(attentions(model), processors))
    assert_same_state(before, state_of(model))


def test_unsupported_processor_is_refused_and_nothing_changes():
    class CustomProcessor(WanAttnProcessor):
        pass

    model = tiny_wan()
    attn = attentions(model)[0]
    custom = CustomProcessor()
    attn.set_processor(custom)
    before = state_of(model)
    rope = model.rope
    with pytest.raises(TypeError, match="CustomProcessor.*backend='torch'"):
        dype_rope.patch(model, base_grid=BASE, backend="triton")
    assert model.rope is rope and attn.processor is custom
    assert not dype_rope.is_patched(model)
    assert_same_state(before, state_of(model))


def test_context_parallel_hooks_reach_the_fused_rope():
    """The split hook diffusers puts on `rope` shards the positions the fused module returns along the same
    sequence dimension as the tables, so it must be carried to it; the original keeps its own."""
    from diffusers.hooks.context_parallel import ContextParallelSplitHook
    from diffusers.hooks.hooks import HookRegistry

    model = tiny_wan()
    name = "cp_input---rope"
    split = ContextParallelSplitHook(type(model)._cp_plan["rope"], parallel_config=None)
    HookRegistry.check_if_exists_or_initialize(model.rope).register_hook(split, name)
    original = model.rope
    with dype_rope.patch(model, base_grid=BASE, backend="triton"):
        assert isinstance(model.rope, FusedWanRotaryPosEmbed)
        carried = model.rope._diffusers_hook.hooks
        assert list(carried) == [name] and isinstance(carried[name], ContextParallelSplitHook)
    assert model.rope is original and original._diffusers_hook.hooks == {name: split}


def test_table_path_matches_the_stock_processor():
    """Called with (cos, sin) tables [1, L, 1, D], the fused processor rotates through the table kernel and gives
    what WanAttnProcessor gives, also for tables whose two channels of a pair differ (Wan reads cos from the even
    channel and sin from the odd one)."""
    model = tiny_wan()
    attn = attentions(model)[0]  # self-attention
    dim = TINY_WAN["attention_head_dim"] * TINY_WAN["num_attention_heads"]
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 7, dim, generator=g)
    cos, sin = (torch.randn(1, 7, 1, TINY_WAN["attention_head_dim"], generator=g) for _ in range(2))

    def no_plan():
        raise AssertionError("the table path must not ask for a plan")

    with torch.no_grad():
        want = WanAttnProcessor()(attn, hidden, rotary_emb=(cos, sin))
        got = FusedWanAttnProcessor(no_plan)(attn, hidden, rotary_emb=(cos, sin))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
