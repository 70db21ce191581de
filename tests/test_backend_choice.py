"""What backend="auto" chooses, for models (dype_rope.patch) and for the kernel entry points.

Until benchmarks/gpu_bench.py's correctness check has passed on a real GPU and its record is in
kernels/verified.py (GPU_CHECK_PASSED), "auto" takes the torch path everywhere; afterwards it takes the kernels
for CUDA models and tensors when Triton imports. The CUDA side of that decision never runs on a CPU machine,
so the device type, CUDA's presence and the switch are substituted here.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dype_rope.kernels import ops, verified
from dype_rope.patching import resolve_backend

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


class _OnDevice(nn.Module):
    """A model whose parameters report `device_type` (a CUDA device cannot be made on a CPU machine)."""

    def __init__(self, device_type: str) -> None:
        super().__init__()
        self._param = SimpleNamespace(device=torch.device(device_type))

    def parameters(self, recurse: bool = True):
        return iter([self._param])


@pytest.mark.parametrize("cuda_present", [True, False], ids=["cuda-present", "no-cuda"])
@pytest.mark.parametrize("record", ["", "NVIDIA H100 80GB HBM3, 2026-12-01: 411 checks"],
                         ids=["unverified", "verified"])
@pytest.mark.parametrize("device_type", ["cuda", "cpu", "meta"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "no-fused"])
def test_auto_for_models(fused, device_type, record, cuda_present, monkeypatch):
    monkeypatch.setattr(verified, "GPU_CHECK_PASSED", record)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_present)
    want = "triton" if fused and device_type == "cuda" and record and cuda_present else "torch"
    assert resolve_backend("auto", _OnDevice(device_type), fused=fused) == want
    # an explicit choice is never overridden by the switch
    assert resolve_backend("triton", _OnDevice(device_type), fused=fused) == "triton"
    assert resolve_backend("torch", _OnDevice(device_type), fused=fused) == "torch"


def test_auto_for_a_model_without_parameters_is_torch(monkeypatch):
    monkeypatch.setattr(verified, "GPU_CHECK_PASSED", "a record")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto", nn.Identity(), fused=True) == "torch"


@pytest.mark.parametrize("record", ["", "a record"], ids=["unverified", "verified"])
@pytest.mark.parametrize("on_cuda", [True, False], ids=["cuda-tensors", "cpu-tensors"])
def test_auto_for_kernel_calls(on_cuda, record, monkeypatch):
    monkeypatch.setattr(verified, "GPU_CHECK_PASSED", record)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    tensors = [SimpleNamespace(is_cuda=on_cuda, dtype=torch.bfloat16) for _ in range(2)]
    assert ops._use_triton("auto", *tensors) == bool(on_cuda and record)
    assert ops._use_triton("torch", *tensors) is False


def test_the_switch_is_set_only_with_a_recorded_gpu_check():
    """The repository's own state: a record in GPU_CHECK_PASSED must be one that benchmarks/RESULTS.md holds as a
    passed check (gpu_bench.py writes it as 'GPU check passed: <record>'); an empty switch needs none."""
    recorded = [r.strip(" *`") for r in re.findall(r"GPU check passed: (.+)", RESULTS.read_text())]
    assert not verified.GPU_CHECK_PASSED or verified.GPU_CHECK_PASSED in recorded, (
        f"kernels/verified.py claims {verified.GPU_CHECK_PASSED!r}, RESULTS.md records {recorded}")
