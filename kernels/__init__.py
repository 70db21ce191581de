"""Fused GPU kernels for dynamic RoPE (see docs/kernels.md).

The public functions validate their inputs and dispatch: with backend="auto", Triton kernels on CUDA once they
have passed the GPU check (kernels/verified.py), the pure-torch reference of dype_rope.rope otherwise. Triton
itself is imported only when a kernel runs.
"""

from __future__ import annotations

from .ops import rms_norm_rope_qk, rope_qk, rope_qk_tables
from .verified import auto_uses_triton, triton_available

__all__ = ["auto_uses_triton", "rms_norm_rope_qk", "rope_qk", "rope_qk_tables", "triton_available"]
