"""Fused GPU kernels for dynamic RoPE."""

from __future__ import annotations


def triton_available() -> bool:
    """True when Triton imports and a CUDA device is present."""
    try:
        import torch
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()
