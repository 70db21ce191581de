"""The one switch that lets backend="auto" choose the fused kernels.

The kernels are tested on the CPU under the Triton interpreter and compiled for sm_80..sm_90 without a GPU,
but until `python benchmarks/gpu_bench.py` has passed its correctness check on a real GPU, "auto" keeps every
model and every `dype_rope.kernels` call on the pure-torch path; `backend="triton"` always stays available.

When gpu_bench.py's check passes it records the card, the date and the check in benchmarks/RESULTS.md and
prints the line to put here. Set GPU_CHECK_PASSED to that record (the card, date and check, as a string)
only then; a non-empty record is what makes "auto" prefer the kernels on CUDA.
"""

from __future__ import annotations

GPU_CHECK_PASSED: str = ""


def triton_available() -> bool:
    """True when Triton imports and a CUDA device is present."""
    try:
        import torch
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def auto_uses_triton(device_type: str) -> bool:
    """What backend="auto" does for tensors or a model on `device_type` (the one rule, shared by
    dype_rope.kernels and dype_rope.patch): the kernels only on CUDA, only once GPU_CHECK_PASSED holds a
    record, and only if Triton imports and a CUDA device is present."""
    return device_type == "cuda" and bool(GPU_CHECK_PASSED) and triton_available()
