"""Fused q + k RoPE kernel (positions + plan) under the Triton interpreter against a float64 reference.

Matrix: dtype x layout x [B, L, H, D] / [B, H, L, D] strides x in place, plus odd shapes (L = 217, D = 92),
batched plans and positions, gradients, large angles, poisoned outputs, torch.compile and dispatch.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from dype_rope import apply_rope_plan
from dype_rope.kernels import rope_qk
from dype_rope.kernels.rope_triton import launch_rope_qk
from kernel_reference import (
    F64, KERNEL_DTYPES, assert_close_to_ref, batched_plan, dype_plan, grid_positions, make_qk, ref_rope,
)

LAYOUTS = ("interleaved", "half")


def _shapes(batch, seq, hq, hk, d):
    return (batch, seq, hq, d), (batch, seq, hk, d)


@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("sequence_dim", [1, 2], ids=["BLHD", "BHLD"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_matches_float64_reference(dtype, layout, sequence_dim, inplace):
    plan = dype_plan()
    positions = grid_positions(5, high=300)
    q, k = make_qk(*_shapes(2, 5, 3, 2, 32), dtype, sequence_dim)  # Hk != Hq: grouped-query attention
    q_before, k_before = q.clone(), k.clone()
    ref_q = ref_rope(q, positions, plan, layout, sequence_dim)
    ref_k = ref_rope(k, positions, plan, layout, sequence_dim)
    q_out, k_out = rope_qk(q, k, positions, plan, layout, sequence_dim, inplace=inplace, backend="triton")
    assert_close_to_ref(q_out, ref_q)
    assert_close_to_ref(k_out, ref_k)
    assert q_out.dtype == dtype and q_out.shape == q.shape
    if inplace:
        assert q_out is q and k_out is k
    else:  # the caller's tensors are untouched, bit for bit, and keep their strides
        assert torch.equal(q, q_before) and torch.equal(k, k_before)
        assert q_out.stride() == q.stride()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_odd_shapes_write_every_element_and_nothing_else(layout):
    """L = 217 and head dim 92 (46 pairs: masked lanes in every row); outputs poisoned with NaN are views into
    a larger NaN buffer, so both unwritten elements and writes past the view would show."""
    plan = dype_plan(axes=(16, 38, 38))
    positions = grid_positions(217, high=200, seed=3)
    q, k = make_qk(*_shapes(1, 217, 2, 1, 92), torch.float32, 1)
    q_buf = torch.full((1, 217, 3, 96), float("nan"))
    k_buf = torch.full((1, 217, 2, 96), float("nan"))
    q_out, k_out = q_buf[:, :, :2, :92], k_buf[:, :, :1, :92]
    launch_rope_qk(q, k, q_out, k_out, positions, *plan, layout == "interleaved", 1, False)
    assert_close_to_ref(q_out, ref_rope(q, positions, plan, layout, 1))
    assert_close_to_ref(k_out, ref_rope(k, positions, plan, layout, 1))
    assert q_buf[:, :, 2:].isnan().all() and q_buf[..., 92:].isnan().all() and k_buf[:, :, 1:].isnan().all()


@pytest.mark.parametrize("positions_batched", [False, True], ids=["pos[L,n]", "pos[B,L,n]"])
def test_batched_plan_and_positions(positions_batched):
    plan = batched_plan((8, 12, 12), ts=(0.9, 0.2))  # one plan per sample: e.g. two timesteps in a batch
    positions = torch.stack([grid_positions(6, seed=1), grid_positions(6, seed=2)]) if positions_batched \
        else grid_positions(6, seed=1)
    q, k = make_qk(*_shapes(2, 6, 2, 2, 32), torch.float32, 2)
    q_out, k_out = rope_qk(q, k, positions, plan, "half", 2, backend="triton")
    assert_close_to_ref(q_out, ref_rope(q, positions, plan, "half", 2))
    assert_close_to_ref(k_out, ref_rope(k, positions, plan, "half", 2))
    # sample 1 was rotated by its own plan, not by sample 0's
    wrong = ref_rope(q, positions, dype_plan(t=0.9), "half", 2)[1]
    assert not torch.allclose(q_out[1].to(F64), wrong, atol=1e-3)


def test_large_angles_stay_accurate():
    """Plain RoPE's fastest pair turns one radian per position: at positions up to 2047 the angles reach
    thousands of radians, where a float32 angle product would be off by ~1e-4."""
    plan = dype_plan(axes=(4, 14, 14), scales=(1.0, 1.0, 1.0), t=0.0)
    positions = torch.stack([torch.zeros(64), torch.linspace(1024, 2047, 64).round(), torch.arange(64.0) * 31], -1)
    q, k = make_qk(*_shapes(1, 64, 1, 1, 32), torch.float32, 1, seed=5)
    q_out, _ = rope_qk(q, k, positions, plan, "interleaved", 1, backend="triton")
    ref = ref_rope(q, positions, plan, "interleaved", 1)
    assert (q_out.to(F64) - ref).abs().max() < 4e-6


def test_integer_positions_and_float32_plans():
    """Integer ids read as their float values; a float32 plan is taken at its own (float32) values."""
    plan, positions = dype_plan(), grid_positions(4, high=900)
    q, k = make_qk(*_shapes(1, 4, 2, 2, 32), torch.float32, 1)
    want = rope_qk(q, k, positions, plan, backend="triton")
    for ids in (positions.long(), positions.int()):
        got = rope_qk(q, k, ids, plan, backend="triton")
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    plan32 = type(plan)(plan.inv_freq.float(), plan.mscale.float(), plan.pair_axis)
    q_out, _ = rope_qk(q, k, positions, plan32, backend="triton")
    assert_close_to_ref(q_out, ref_rope(q, positions, plan32, "interleaved", 1))


@pytest.mark.parametrize("sequence_dim", [1, 2], ids=["BLHD", "BHLD"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients_match_float64_autograd(layout, sequence_dim):
    plan = dype_plan()
    positions = grid_positions(5, high=500)
    q, k = make_qk(*_shapes(2, 5, 2, 3, 32), torch.float32, sequence_dim)
    q64, k64 = q.to(F64).requires_grad_(), k.to(F64).requires_grad_()
    q.requires_grad_(), k.requires_grad_()
    g = torch.Generator().manual_seed(9)
    gq, gk = torch.randn(q.shape, generator=g), torch.randn(k.shape, generator=g)
    q_out, k_out = rope_qk(q, k, positions, plan, layout, sequence_dim, backend="triton")
    grads = torch.autograd.grad((q_out * gq).sum() + (k_out * gk).sum(), (q, k))
    ref_q, ref_k = ref_rope(q64, positions, plan, layout, sequence_dim), ref_rope(k64, positions, plan, layout, sequence_dim)
    ref_grads = torch.autograd.grad((ref_q * gq).sum() + (ref_k * gk).sum(), (q64, k64))
    for got, want in zip(grads, ref_grads):
        assert_close_to_ref(got, want)


def test_matches_the_torch_reference_of_the_package():
    """The dispatching entry point's two backends agree (the torch one is dype_rope.rope.apply_rope_plan)."""
    plan, positions = dype_plan(), grid_positions(7, high=900)
    q, k = make_qk(*_shapes(1, 7, 2, 2, 32), torch.bfloat16, 1)
    fused = rope_qk(q, k, positions, plan, backend="triton")
    eager = rope_qk(q, k, positions, plan, backend="torch")
    assert torch.equal(eager[0], apply_rope_plan(q, positions, plan))
    for a, b in zip(fused, eager):  # each rounds its own float32 value: one bf16 ulp apart at most
        assert ((a.float() - b.float()).abs() <= torch.finfo(torch.bfloat16).eps * b.float().abs() + 1e-6).all()


def test_auto_backend_on_cpu_is_the_torch_reference():
    plan, positions = dype_plan(), grid_positions(4)
    q, k = make_qk(*_shapes(1, 4, 2, 2, 32), torch.float64, 1)  # float64: the kernels would refuse it
    q_out, k_out = rope_qk(q, k, positions, plan, backend="auto")
    assert torch.equal(q_out, apply_rope_plan(q, positions, plan)) and torch.equal(k_out, apply_rope_plan(k, positions, plan))


def test_compiles_into_one_graph_with_gradients():
    plan, positions = dype_plan(), grid_positions(4)
    q, k = make_qk(*_shapes(1, 4, 2, 2, 32), torch.float32, 1)
    q.requires_grad_()

    def step(q, k):
        q_out, k_out = rope_qk(q, k, positions, plan, backend="triton")
        return (q_out * k_out).sum()

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(step, fullgraph=True, backend=counter)
    loss = compiled(q, k)
    (grad,) = torch.autograd.grad(loss, q)
    (want,) = torch.autograd.grad(step(q, k), q)
    assert counter.frame_count == 1
    torch.testing.assert_close(loss, step(q, k))
    torch.testing.assert_close(grad, want)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(layout="rotate"), "unknown RoPE layout"),
        (dict(sequence_dim=3), "sequence_dim must be 1"),
        (dict(positions=torch.zeros(3, 3)), "positions must be"),
        (dict(k=torch.zeros(1, 4, 2, 30)), "differ in batch, sequence or head dim"),
        (dict(backend="cuda"), "backend must be one of"),
        (dict(q=torch.zeros(1, 4, 2, 32, dtype=torch.float64), backend="triton"), "float32, bfloat16 or float16"),
    ],
)
def test_bad_input_is_named(change, message):
    q, k = make_qk(*_shapes(1, 4, 2, 2, 32), torch.float32, 1)
    args = dict(q=q, k=k, positions=grid_positions(4), plan=dype_plan(), layout="half", sequence_dim=1, backend="triton")
    with pytest.raises((ValueError, TypeError), match=message):
        rope_qk(**{**args, **change})


def test_in_place_refuses_tensors_that_need_gradients():
    q, k = make_qk(*_shapes(1, 4, 2, 2, 32), torch.float32, 1)
    with pytest.raises(ValueError, match="in-place RoPE cannot be differentiated"):
        rope_qk(q.requires_grad_(), k, grid_positions(4), dype_plan(), inplace=True, backend="triton")
