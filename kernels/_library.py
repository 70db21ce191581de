"""The kernels as torch.library operators (namespace `dype_rope`), with autograd.

On a GPU they are `triton_op`s launched through `wrap_triton`, so torch.compile sees the Triton kernels
themselves and traces through them into one graph. Under the Triton interpreter (TRITON_INTERPRET=1, CPU
tensors) `wrap_triton` cannot trace an interpreted kernel, so the same functions become opaque custom ops
with shape-only fake implementations: torch.compile(fullgraph=True) still captures them in the graph.

Backward passes reuse the forward kernels: the gradient of a rotation is the rotation by minus the angle
(the transpose, for per-channel tables), and RMSNorm's backward runs in float32 torch ops after it.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor
from torch.library import custom_op, triton_op

from .norm_rope_triton import launch_norm_rope_qk
from .rope_tables_triton import launch_rope_qk_tables
from .rope_triton import launch_rope_qk, rope_qk_kernel

INTERPRETED = not isinstance(rope_qk_kernel, triton.runtime.JITFunction)


def _define(name: str, mutates_args: tuple[str, ...] = ()):
    qualname = f"dype_rope::{name}"
    if INTERPRETED:
        return lambda fn: custom_op(qualname, fn, mutates_args=mutates_args)
    return lambda fn: triton_op(qualname, fn, mutates_args=mutates_args)


def _like(x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=torch.preserve_format)


# -- position-based rotation -------------------------------------------------------------------------------
@_define("rope_qk")
def rope_qk(
    q: Tensor, k: Tensor, positions: Tensor, inv_freq: Tensor, mscale: Tensor, pair_axis: Tensor,
    interleaved: bool, sequence_dim: int, conjugate: bool,
) -> tuple[Tensor, Tensor]:
    q_out, k_out = _like(q), _like(k)
    launch_rope_qk(q, k, q_out, k_out, positions, inv_freq, mscale, pair_axis, interleaved, sequence_dim, conjugate)
    return q_out, k_out


@_define("rope_qk_", mutates_args=("q", "k"))
def rope_qk_(
    q: Tensor, k: Tensor, positions: Tensor, inv_freq: Tensor, mscale: Tensor, pair_axis: Tensor,
    interleaved: bool, sequence_dim: int, conjugate: bool,
) -> None:
    launch_rope_qk(q, k, q, k, positions, inv_freq, mscale, pair_axis, interleaved, sequence_dim, conjugate)


def _save_rope(ctx, inputs, output) -> None:
    _, _, positions, inv_freq, mscale, pair_axis, interleaved, sequence_dim, conjugate = inputs
    ctx.save_for_backward(positions, inv_freq, mscale, pair_axis)
    ctx.layout = (interleaved, sequence_dim, conjugate)


def _rope_backward(ctx, grad_q: Tensor, grad_k: Tensor):
    positions, inv_freq, mscale, pair_axis = ctx.saved_tensors
    interleaved, sequence_dim, conjugate = ctx.layout
    gq, gk = rope_qk(grad_q, grad_k, positions, inv_freq, mscale, pair_axis, interleaved, sequence_dim, not conjugate)
    return gq, gk, None, None, None, None, None, None, None


rope_qk.register_autograd(_rope_backward, setup_context=_save_rope)


# -- table-based rotation ----------------------------------------------------------------------------------
@_define("rope_qk_tables")
def rope_qk_tables(
    q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, interleaved: bool, sequence_dim: int, transpose: bool
) -> tuple[Tensor, Tensor]:
    q_out, k_out = _like(q), _like(k)
    launch_rope_qk_tables(q, k, q_out, k_out, cos, sin, interleaved, sequence_dim, transpose)
    return q_out, k_out


@_define("rope_qk_tables_", mutates_args=("q", "k"))
def rope_qk_tables_(
    q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, interleaved: bool, sequence_dim: int, transpose: bool
) -> None:
    launch_rope_qk_tables(q, k, q, k, cos, sin, interleaved, sequence_dim, transpose)


def _save_tables(ctx, inputs, output) -> None:
    _, _, cos, sin, interleaved, sequence_dim, transpose = inputs
    ctx.save_for_backward(cos, sin)
    ctx.layout = (interleaved, sequence_dim, transpose)


def _tables_backward(ctx, grad_q: Tensor, grad_k: Tensor):
    cos, sin = ctx.saved_tensors
    interleaved, sequence_dim, transpose = ctx.layout
    gq, gk = rope_qk_tables(grad_q, grad_k, cos, sin, interleaved, sequence_dim, not transpose)
    return gq, gk, None, None, None, None, None


rope_qk_tables.register_autograd(_tables_backward, setup_context=_save_tables)


# -- RMSNorm + rotation ------------------------------------------------------------------------------------
@_define("norm_rope_qk")
def norm_rope_qk(
    q: Tensor, k: Tensor, q_weight: Tensor | None, k_weight: Tensor | None, eps_q: float, eps_k: float,
    positions: Tensor, inv_freq: Tensor, mscale: Tensor, pair_axis: Tensor, interleaved: bool, sequence_dim: int,
) -> tuple[Tensor, Tensor]:
    q_out, k_out = _like(q), _like(k)
    launch_norm_rope_qk(q, k, q_out, k_out, q_weight, k_weight, eps_q, eps_k, positions, inv_freq, mscale,
                        pair_axis, interleaved, sequence_dim)
    return q_out, k_out


def _save_norm(ctx, inputs, output) -> None:
    q, k, q_weight, k_weight, eps_q, eps_k, positions, inv_freq, mscale, pair_axis, interleaved, sequence_dim = inputs
    ctx.save_for_backward(q, k, q_weight, k_weight, positions, inv_freq, mscale, pair_axis)
    ctx.args = (eps_q, eps_k, interleaved, sequence_dim)


def _rms_norm_backward(x: Tensor, weight: Tensor | None, eps: float, grad_n: Tensor) -> tuple[Tensor, Tensor | None]:
    """Gradients of rms_norm(x) * weight given the gradient of its output (all in float32)."""
    xf = x.float()
    rstd = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    x_hat = xf * rstd
    g = grad_n.float()
    grad_w = None if weight is None else (g * x_hat).flatten(0, -2).sum(0).to(weight.dtype)
    gy = g if weight is None else g * weight.float()
    grad_x = rstd * (gy - x_hat * (gy * x_hat).mean(-1, keepdim=True))
    return grad_x.to(x.dtype), grad_w


def _norm_backward(ctx, grad_q: Tensor, grad_k: Tensor):
    q, k, q_weight, k_weight, positions, inv_freq, mscale, pair_axis = ctx.saved_tensors
    eps_q, eps_k, interleaved, sequence_dim = ctx.args
    # The rotation comes last, so its transpose comes first: float32 gradients of the normalised q and k.
    gn_q, gn_k = rope_qk(grad_q.float(), grad_k.float(), positions, inv_freq, mscale, pair_axis, interleaved,
                         sequence_dim, True)
    gq, gwq = _rms_norm_backward(q, q_weight, eps_q, gn_q)
    gk, gwk = _rms_norm_backward(k, k_weight, eps_k, gn_k)
    return gq, gk, gwq, gwk, None, None, None, None, None, None, None, None


norm_rope_qk.register_autograd(_norm_backward, setup_context=_save_norm)

if INTERPRETED:
    # Shape-only implementations for tracing; the interpreted kernels run only on real tensors.
    @rope_qk.register_fake
    def _(q, k, positions, inv_freq, mscale, pair_axis, interleaved, sequence_dim, conjugate):
        return _like(q), _like(k)

    @rope_qk_.register_fake
    def _(q, k, positions, inv_freq, mscale, pair_axis, interleaved, sequence_dim, conjugate):
        return None

    @rope_qk_tables.register_fake
    def _(q, k, cos, sin, interleaved, sequence_dim, transpose):
        return _like(q), _like(k)

    @rope_qk_tables_.register_fake
    def _(q, k, cos, sin, interleaved, sequence_dim, transpose):
        return None

    @norm_rope_qk.register_fake
    def _(q, k, q_weight, k_weight, eps_q, eps_k, positions, inv_freq, mscale, pair_axis, interleaved,
          sequence_dim):
        return _like(q), _like(k)
