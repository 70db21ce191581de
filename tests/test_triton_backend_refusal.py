"""backend="triton" on a family whose attention is not wired to the fused kernels: an explicit request is refused
with an error naming the family (never silently ignored); "auto" quietly takes the torch path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dype_rope
from families.row import assert_same_state, state_of
from dype_rope.adapters import Adapter
from dype_rope.adapters import base as adapter_base
from dype_rope.patching import resolve_backend
from families.sd3 import SD3, tiny_sd3


def test_explicit_triton_is_refused_and_nothing_changes():
    model = tiny_sd3()
    before = state_of(model)
    with pytest.raises(ValueError, match=r"sd3 family.*backend='torch' or backend='auto'"):
        dype_rope.patch(model, backend="triton")
    assert not dype_rope.is_patched(model)
    assert_same_state(before, state_of(model))


def test_auto_and_torch_still_patch_the_same_family():
    model = tiny_sd3()
    inputs = SD3.inputs((4, 4), 0.6)
    with torch.no_grad():
        with dype_rope.patch(model, base_grid=(2, 2), backend="auto") as handle:
            auto = model(**inputs).sample
            assert handle.adapter.backend == "torch"
        with dype_rope.patch(model, base_grid=(2, 2), backend="torch"):
            eager = model(**inputs).sample
    assert torch.equal(auto, eager)


def test_auto_takes_torch_for_families_without_fused_attention():
    """The "auto" rule itself: without fused attention the answer is "torch" before the device is even looked at
    (so CUDA models of these families never reach the refusal); an explicit choice passes through unchanged."""
    model = nn.Linear(2, 2)
    assert resolve_backend("auto", model, fused=False) == "torch"
    assert resolve_backend("triton", model, fused=False) == "triton"
    assert resolve_backend("torch", model, fused=True) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", model, fused=True)


class _Toy(nn.Module):
    def forward(self, x):
        return x


class _ToyAdapter(Adapter):
    name = "toy"
    rescaled_axes = (0,)

    def default_base_grid(self):
        return (4,)

    def install(self):
        pass


class _FusedToyAdapter(_ToyAdapter):
    fused_attention = True


@pytest.mark.parametrize("adapter_cls", [_ToyAdapter, _FusedToyAdapter], ids=lambda c: c.__name__)
def test_a_user_adapter_declares_its_fused_support(adapter_cls, monkeypatch):
    """Adapters without `fused_attention = True` (the base default) refuse "triton"; those that declare it get it."""
    monkeypatch.setitem(adapter_base._BY_CLASS, _Toy, adapter_cls)  # registered for this test only
    if not adapter_cls.fused_attention:
        with pytest.raises(ValueError, match="toy family"):
            dype_rope.patch(_Toy(), backend="triton")
        return
    with dype_rope.patch(_Toy(), backend="triton") as handle:
        assert handle.adapter.backend == "triton"
