"""Fused QK-RMSNorm + RoPE under the Triton interpreter against float64 RMSNorm followed by float64 RoPE."""

from __future__ import annotations

import pytest
import torch

from dype_rope.kernels import rms_norm_rope_qk
from dype_rope.kernels.norm_rope_triton import launch_norm_rope_qk
from kernel_reference import (
    F64, KERNEL_DTYPES, assert_close_to_ref, dype_plan, grid_positions, make_qk, ref_rms_norm, ref_rope,
)

LAYOUTS = ("interleaved", "half")
EPS_Q, EPS_K = 1e-6, 1e-5


def weights(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 1 + 0.5 * torch.randn(d, generator=g), 1 + 0.5 * torch.randn(d, generator=g)


def reference(q, k, wq, wk, positions, plan, layout, sequence_dim):
    return (ref_rope(ref_rms_norm(q, wq, EPS_Q), positions, plan, layout, sequence_dim),
            ref_rope(ref_rms_norm(k, wk, EPS_K), positions, plan, layout, sequence_dim))


@pytest.mark.parametrize("affine", [True, False], ids=["weight", "no-weight"])
@pytest.mark.parametrize("sequence_dim", [1, 2], ids=["BLHD", "BHLD"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_matches_float64_reference(dtype, layout, sequence_dim, affine):
    plan, positions = dype_plan(), grid_positions(5, high=300)
    q, k = make_qk((2, 5, 3, 32), (2, 5, 2, 32), dtype, sequence_dim)
    q = q * 7  # RMSNorm must take the scale out again
    wq, wk = (w.to(dtype) for w in weights(32)) if affine else (None, None)
    q_before, k_before = q.clone(), k.clone()
    q_out, k_out = rms_norm_rope_qk(q, k, wq, wk, positions, plan, (EPS_Q, EPS_K), layout, sequence_dim, backend="triton")
    ref_q, ref_k = reference(q, k, wq, wk, positions, plan, layout, sequence_dim)
    assert_close_to_ref(q_out, ref_q)
    assert_close_to_ref(k_out, ref_k)
    assert torch.equal(q, q_before) and torch.equal(k, k_before)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_odd_shapes_write_every_element_and_nothing_else(layout):
    plan, positions = dype_plan(axes=(16, 38, 38)), grid_positions(217, high=200, seed=2)
    q, k = make_qk((1, 217, 2, 92), (1, 217, 1, 92), torch.float32, 1)
    wq, wk = weights(92)
    q_buf = torch.full((1, 217, 3, 96), float("nan"))
    k_buf = torch.full((1, 217, 2, 96), float("nan"))
    q_out, k_out = q_buf[:, :, :2, :92], k_buf[:, :, :1, :92]
    launch_norm_rope_qk(q, k, q_out, k_out, wq, wk, EPS_Q, EPS_K, positions, *plan, layout == "interleaved", 1)
    ref_q, ref_k = reference(q, k, wq, wk, positions, plan, layout, 1)
    assert_close_to_ref(q_out, ref_q)
    assert_close_to_ref(k_out, ref_k)
    assert q_buf[:, :, 2:].isnan().all() and q_buf[..., 92:].isnan().all() and k_buf[:, :, 1:].isnan().all()


@pytest.mark.parametrize("sequence_dim", [1, 2], ids=["BLHD", "BHLD"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients_of_inputs_and_weights(layout, sequence_dim):
    plan, positions = dype_plan(), grid_positions(4, high=300)
    q, k = make_qk((2, 4, 2, 32), (2, 4, 2, 32), torch.float32, sequence_dim, seed=3)
    wq, wk = weights(32, seed=1)
    leaves = [t.clone().requires_grad_() for t in (q, k, wq, wk)]
    leaves64 = [t.to(F64).requires_grad_() for t in (q, k, wq, wk)]
    g = torch.Generator().manual_seed(4)
    gq, gk = torch.randn(q.shape, generator=g), torch.randn(k.shape, generator=g)
    q_out, k_out = rms_norm_rope_qk(*leaves[:2], *leaves[2:], positions, plan, (EPS_Q, EPS_K), layout, sequence_dim,
                                    backend="triton")
    grads = torch.autograd.grad((q_out * gq).sum() + (k_out * gk).sum(), leaves)
    ref_q, ref_k = reference(*leaves64, positions, plan, layout, sequence_dim)
    ref_grads = torch.autograd.grad((ref_q * gq).sum() + (ref_k * gk).sum(), leaves64)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.to(F64), want, rtol=2e-5, atol=2e-5)


def test_one_weight_alone_is_refused():
    q, k = make_qk((1, 4, 2, 32), (1, 4, 2, 32), torch.float32, 1)
    with pytest.raises(ValueError, match="both q_weight and k_weight"):
        rms_norm_rope_qk(q, k, torch.ones(32), None, grid_positions(4), dype_plan(), backend="triton")
