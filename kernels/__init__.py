"""Fused GPU kernels for dynamic RoPE (see docs/kernels.md).

The public functions validate their inputs and dispatch: Triton kernels on CUDA, the pure-torch reference of
dype_rope.rope elsewhere. Triton itself is imported only when a kernel runs.
"""

from __future__ import annotations

from .ops import rms_norm_rope_qk, rope_qk, rope_qk_tables

__all__ = ["rms_norm_rope_qk", "rope_qk", "rope_qk_tables", "triton_available"]


def triton_available() -> bool:
    """True when Triton imports and a CUDA device is present."""
    try:
        import torch
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()
