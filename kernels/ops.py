"""Public entry points of the fused kernels: validate, then run Triton on CUDA (once the kernels have passed
the GPU check, see kernels/verified.py) and the pure-torch reference (dype_rope.rope) otherwise.
`backend="triton"` forces the kernels (CPU tensors then need the Triton interpreter, TRITON_INTERPRET=1);
`backend="torch"` forces the reference.

Shapes: q [B, L, Hq, D] with sequence_dim=1 or [B, Hq, L, D] with sequence_dim=2 (any strides, no copies);
k the same with Hk heads; positions [L, n_axes] or [B, L, n_axes]; a RopePlan with inv_freq / mscale [D/2] or
[B, D/2]; tables cos / sin [L, D] or [B, L, D]. Gradients flow to q, k and the norm weights, not to
positions, plans or tables.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from dype_rope.rope import RopePlan, apply_rope, apply_rope_plan, check_layout

from . import verified

BACKENDS = ("auto", "torch", "triton")
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _library():
    from . import _library as lib  # imports triton: only when the kernels are actually used

    return lib


def _use_triton(backend: str, *tensors: Tensor) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if backend == "auto":
        if not on_cuda or not verified.auto_uses_triton("cuda"):
            return False
        try:
            _library()
        except ImportError:
            return False
        return True
    if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("backend='triton' needs CUDA tensors (or the Triton interpreter, TRITON_INTERPRET=1)")
    for t in tensors:
        if t.dtype not in KERNEL_DTYPES:
            raise TypeError(f"the Triton kernels take float32, bfloat16 or float16 q / k, got {t.dtype}")
    return True


def _check_qk(q: Tensor, k: Tensor, sequence_dim: int) -> tuple[int, int, int]:
    if sequence_dim not in (1, 2):
        raise ValueError(f"sequence_dim must be 1 ([B, L, H, D]) or 2 ([B, H, L, D]), got {sequence_dim}")
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must be 4-d, got shapes {tuple(q.shape)} and {tuple(k.shape)}")
    b, seq, d = q.shape[0], q.shape[sequence_dim], q.shape[-1]
    if (k.shape[0], k.shape[sequence_dim], k.shape[-1]) != (b, seq, d):
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} differ in batch, sequence or head dim")
    if d % 2:
        raise ValueError(f"RoPE needs an even head dim, got {d}")
    if q.device != k.device:
        raise ValueError(f"q is on {q.device} but k is on {k.device}")
    return b, seq, d


def _check_positions(positions: Tensor, plan: RopePlan, b: int, seq: int, d: int) -> None:
    batched_ok = positions.dim() == 2 or positions.shape[0] == b
    if positions.dim() not in (2, 3) or positions.shape[-2] != seq or not batched_ok:
        raise ValueError(
            f"positions must be [L, n_axes] or [B, L, n_axes] with L={seq}, B={b}; got {tuple(positions.shape)}"
        )
    inv_freq, mscale, pair_axis = plan
    if inv_freq.dim() not in (1, 2) or inv_freq.shape[-1] != d // 2 or (inv_freq.dim() == 2 and inv_freq.shape[0] != b):
        raise ValueError(
            f"the plan's inv_freq must be [D/2] or [B, D/2] = [{d // 2}] or [{b}, {d // 2}], got {tuple(inv_freq.shape)}"
        )
    if mscale.shape != inv_freq.shape or tuple(pair_axis.shape) != (d // 2,):
        raise ValueError(
            f"plan shapes differ: inv_freq {tuple(inv_freq.shape)}, mscale {tuple(mscale.shape)}, "
            f"pair_axis {tuple(pair_axis.shape)}"
        )
    if inv_freq.requires_grad or mscale.requires_grad:
        raise ValueError("the fused RoPE does not differentiate through the plan; detach inv_freq and mscale")


def _check_tables(cos: Tensor, sin: Tensor, b: int, seq: int, d: int) -> None:
    batched_ok = cos.dim() == 2 or cos.shape[0] == b
    if cos.shape != sin.shape or cos.dim() not in (2, 3) or cos.shape[-2:] != (seq, d) or not batched_ok:
        raise ValueError(
            f"cos / sin must both be [L, D] or [B, L, D] with L={seq}, D={d}, B={b}; "
            f"got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    if cos.requires_grad or sin.requires_grad:
        raise ValueError("the fused RoPE does not differentiate through cos / sin tables; detach them")


def _check_inplace(inplace: bool, *tensors: Tensor) -> None:
    if inplace and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise ValueError("in-place RoPE cannot be differentiated; use inplace=False for tensors that require grad")


def _plan_args(q: Tensor, plan: RopePlan) -> tuple[Tensor, Tensor, Tensor]:
    # No-ops for plans from build_plan; the kernel reads the pair dimension contiguously.
    inv_freq, mscale, pair_axis = (t.to(q.device).contiguous() for t in plan)
    return inv_freq, mscale, pair_axis


def rope_qk(
    q: Tensor, k: Tensor, positions: Tensor, plan: RopePlan, layout: str = "interleaved", sequence_dim: int = 1,
    inplace: bool = False, backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Rotate q and k by the plan's angles at `positions`, in one launch on the GPU.

    With inplace=True q and k are overwritten and returned; otherwise they are left untouched.
    """
    check_layout(layout)
    b, seq, d = _check_qk(q, k, sequence_dim)
    _check_positions(positions, plan, b, seq, d)
    _check_inplace(inplace, q, k)
    if not _use_triton(backend, q, k):
        q_out = apply_rope_plan(q, positions, plan, layout, sequence_dim)
        k_out = apply_rope_plan(k, positions, plan, layout, sequence_dim)
        return (q.copy_(q_out), k.copy_(k_out)) if inplace else (q_out, k_out)
    lib = _library()
    args = (positions.to(q.device), *_plan_args(q, plan), layout == "interleaved", sequence_dim, False)
    if inplace:
        lib.rope_qk_(q, k, *args)
        return q, k
    return lib.rope_qk(q, k, *args)


def rope_qk_tables(
    q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, layout: str = "interleaved", sequence_dim: int = 1,
    inplace: bool = False, backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Rotate q and k by per-channel cos / sin tables [L, D] or [B, L, D] (as dype_rope.rope.apply_rope)."""
    check_layout(layout)
    b, seq, d = _check_qk(q, k, sequence_dim)
    _check_tables(cos, sin, b, seq, d)
    _check_inplace(inplace, q, k)
    if not _use_triton(backend, q, k):
        q_out = apply_rope(q, cos, sin, layout, sequence_dim)
        k_out = apply_rope(k, cos, sin, layout, sequence_dim)
        return (q.copy_(q_out), k.copy_(k_out)) if inplace else (q_out, k_out)
    lib = _library()
    args = (cos.to(q.device), sin.to(q.device), layout == "interleaved", sequence_dim, False)
    if inplace:
        lib.rope_qk_tables_(q, k, *args)
        return q, k
    return lib.rope_qk_tables(q, k, *args)


def rms_norm_rope_qk(
    q: Tensor, k: Tensor, q_weight: Tensor | None, k_weight: Tensor | None, positions: Tensor, plan: RopePlan,
    eps: float | tuple[float, float] = 1e-6, layout: str = "interleaved", sequence_dim: int = 1,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """rope(rms_norm(q) * q_weight) and the same for k: per-head RMSNorm over D, then RoPE, in one pass.

    q_weight / k_weight are [D] (both given or both None); eps is one value or (eps_q, eps_k).
    """
    check_layout(layout)
    b, seq, d = _check_qk(q, k, sequence_dim)
    _check_positions(positions, plan, b, seq, d)
    if (q_weight is None) != (k_weight is None):
        raise ValueError("pass both q_weight and k_weight, or neither")
    for name, w in (("q_weight", q_weight), ("k_weight", k_weight)):
        if w is not None and tuple(w.shape) != (d,):
            raise ValueError(f"{name} must be [D] = [{d}], got {tuple(w.shape)}")
    eps_q, eps_k = (eps, eps) if isinstance(eps, (int, float)) else eps
    if not _use_triton(backend, q, k):
        q_out = apply_rope_plan(F.rms_norm(q, (d,), q_weight, eps_q), positions, plan, layout, sequence_dim)
        k_out = apply_rope_plan(F.rms_norm(k, (d,), k_weight, eps_k), positions, plan, layout, sequence_dim)
        return q_out, k_out
    return _library().norm_rope_qk(
        q, k, q_weight, k_weight, float(eps_q), float(eps_k), positions.to(q.device), *_plan_args(q, plan),
        layout == "interleaved", sequence_dim,
    )
