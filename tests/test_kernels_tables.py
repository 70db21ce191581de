"""Table-based fused q + k RoPE under the Triton interpreter against a float64 per-channel reference."""

from __future__ import annotations

import pytest
import torch

from dype_rope import rope_tables
from dype_rope.kernels import rope_qk_tables
from dype_rope.kernels.rope_tables_triton import launch_rope_qk_tables
from kernel_reference import (
    F64, KERNEL_DTYPES, assert_close_to_ref, dype_plan, grid_positions, make_qk, ref_rope, ref_rope_tables,
)

LAYOUTS = ("interleaved", "half")


def random_tables(shape, seed=0):
    """Tables whose two channels of a pair differ: catches a kernel that reads only one of them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("sequence_dim", [1, 2], ids=["BLHD", "BHLD"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_matches_float64_reference(dtype, layout, sequence_dim, inplace):
    cos, sin = random_tables((5, 32))
    q, k = make_qk((2, 5, 3, 32), (2, 5, 1, 32), dtype, sequence_dim)
    q_before, k_before = q.clone(), k.clone()
    ref_q, ref_k = (ref_rope_tables(x, cos, sin, layout, sequence_dim) for x in (q, k))
    q_out, k_out = rope_qk_tables(q, k, cos, sin, layout, sequence_dim, inplace=inplace, backend="triton")
    assert_close_to_ref(q_out, ref_q)
    assert_close_to_ref(k_out, ref_k)
    if inplace:
        assert q_out is q and k_out is k
    else:
        assert torch.equal(q, q_before) and torch.equal(k, k_before)


def test_dype_tables_give_the_plan_rotation():
    """Tables from dype_rope.rope.rope_tables, batched [B, L, D] and transposed (non-contiguous), rotate like
    the float64 plan reference."""
    plan, positions = dype_plan(), torch.stack([grid_positions(6, high=400, seed=s) for s in (1, 2)])
    cos, sin = rope_tables(positions, plan, "interleaved")
    cos_t, sin_t = cos.transpose(1, 2).contiguous().transpose(1, 2), sin.transpose(1, 2).contiguous().transpose(1, 2)
    q, k = make_qk((2, 6, 2, 32), (2, 6, 2, 32), torch.float32, 1)
    q_out, k_out = rope_qk_tables(q, k, cos_t, sin_t, "interleaved", 1, backend="triton")
    assert_close_to_ref(q_out, ref_rope(q, positions, plan, "interleaved", 1))
    assert_close_to_ref(k_out, ref_rope(k, positions, plan, "interleaved", 1))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_odd_shapes_write_every_element_and_nothing_else(layout):
    cos, sin = random_tables((217, 92), seed=4)
    q, k = make_qk((1, 217, 2, 92), (1, 217, 1, 92), torch.float32, 2)
    q_buf = torch.full((1, 3, 217, 96), float("nan"))
    k_buf = torch.full((1, 2, 217, 96), float("nan"))
    q_out, k_out = q_buf[:, :2, :, :92], k_buf[:, :1, :, :92]
    launch_rope_qk_tables(q, k, q_out, k_out, cos, sin, layout == "interleaved", 2, False)
    assert_close_to_ref(q_out, ref_rope_tables(q, cos, sin, layout, 2))
    assert_close_to_ref(k_out, ref_rope_tables(k, cos, sin, layout, 2))
    assert q_buf[:, 2:].isnan().all() and q_buf[..., 92:].isnan().all() and k_buf[:, 1:].isnan().all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients_are_the_transpose_even_for_unequal_pair_tables(layout):
    cos, sin = random_tables((5, 32), seed=7)
    q, k = make_qk((2, 5, 2, 32), (2, 5, 2, 32), torch.float32, 1)
    q64, k64 = q.to(F64).requires_grad_(), k.to(F64).requires_grad_()
    q.requires_grad_(), k.requires_grad_()
    g = torch.Generator().manual_seed(8)
    gq, gk = torch.randn(q.shape, generator=g), torch.randn(k.shape, generator=g)
    q_out, k_out = rope_qk_tables(q, k, cos, sin, layout, 1, backend="triton")
    grads = torch.autograd.grad((q_out * gq).sum() + (k_out * gk).sum(), (q, k))
    ref_q, ref_k = (ref_rope_tables(x, cos, sin, layout, 1) for x in (q64, k64))
    ref_grads = torch.autograd.grad((ref_q * gq).sum() + (ref_k * gk).sum(), (q64, k64))
    for got, want in zip(grads, ref_grads):
        assert_close_to_ref(got, want)


def test_bad_tables_are_named():
    q, k = make_qk((1, 4, 2, 32), (1, 4, 2, 32), torch.float32, 1)
    cos, sin = random_tables((4, 32))
    with pytest.raises(ValueError, match="cos / sin must both be"):
        rope_qk_tables(q, k, cos[:3], sin[:3], backend="triton")
    with pytest.raises(ValueError, match="does not differentiate through cos / sin"):
        rope_qk_tables(q, k, cos.requires_grad_(), sin, backend="triton")
