"""Registering an adapter for your own DiT: the example in docs/adapters.md, run as written, and the error an
unknown model gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dype_rope
from adapter_checks import assert_same_state, reference_angles, state_of
from dype_rope.adapters import find_adapter

DOC = Path(__file__).resolve().parent.parent / "docs" / "adapters.md"
AXES, THETA = (8, 12, 12), 10000.0


class HalfRope(nn.Module):
    """Stock encoding of the example model: (cos, sin) [L, D] in the "half" layout, angles in float64."""

    def __init__(self, theta: float, axes_dim: list[int]) -> None:
        super().__init__()
        self.theta, self.axes_dim = theta, axes_dim

    def forward(self, ids):
        angles = torch.cat(
            [
                ids[:, a : a + 1].double() / self.theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
                for a, d in enumerate(self.axes_dim)
            ],
            dim=-1,
        )
        return torch.cat([angles.cos()] * 2, -1).float(), torch.cat([angles.sin()] * 2, -1).float()


class MyDiT(nn.Module):
    """forward(x [B, L, C], ids [L, 3], timestep [B] in [0, 1], 1 = noise): one attention layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.qkv, self.out = nn.Linear(4, 64), nn.Linear(64, 192), nn.Linear(64, 4)
        self.rope = HalfRope(THETA, list(AXES))

    def forward(self, x, ids, timestep):
        h = self.inp(x) + timestep[:, None, None]
        q, k, v = self.qkv(h).unflatten(-1, (3, 2, 32)).permute(2, 0, 3, 1, 4)
        cos, sin = self.rope(ids)
        q, k = (dype_rope.apply_rope(z, cos, sin, "half", sequence_dim=2) for z in (q, k))
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


def doc_example() -> str:
    text = DOC.read_text()
    marker = text.index("tests/test_adapter_custom.py")
    return re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)


@pytest.fixture(scope="module")
def adapter():
    namespace = {"MyDiT": MyDiT}
    exec(compile(doc_example(), str(DOC), "exec"), namespace)
    return namespace["MyDiTAdapter"]


def inputs(h, w, t):
    rows, cols = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
    ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).float()
    x = torch.randn(1, h * w, 4, generator=torch.Generator().manual_seed(1))
    return dict(x=x, ids=ids, timestep=torch.tensor([t]))


def test_the_documented_adapter_is_found_and_is_exact_at_the_base_grid(adapter):
    model = MyDiT()
    ref = model(**inputs(4, 6, 0.5))
    with dype_rope.patch(model, base_grid=(4, 6)) as handle:
        assert isinstance(handle.adapter, adapter) and handle.adapter.name == "my-dit"
        assert torch.equal(model(**inputs(4, 6, 0.5)), ref)


def test_the_documented_adapter_follows_the_core_schedule(adapter):
    model = MyDiT()
    with dype_rope.patch(model, base_grid=(4, 6)):
        seen = []
        hook = model.rope.register_forward_hook(lambda m, a, out: seen.append(out))
        model(**inputs(8, 12, 0.6))
        hook.remove()
    cos, sin = seen[0]
    angles, mscale = reference_angles(inputs(8, 12, 0.6)["ids"], AXES, THETA, [1.0, 2.0, 2.0], 0.6, (1.0, 4, 6))
    torch.testing.assert_close(cos.double(), torch.cat([angles.cos() * mscale] * 2, -1), atol=2e-7, rtol=0)
    torch.testing.assert_close(sin.double(), torch.cat([angles.sin() * mscale] * 2, -1), atol=2e-7, rtol=0)


def test_the_documented_adapter_removes_cleanly(adapter):
    model = MyDiT()
    before, ref = state_of(model), model(**inputs(8, 12, 0.6))
    handle = dype_rope.patch(model, base_grid=(4, 6))
    assert not torch.equal(model(**inputs(8, 12, 0.6)), ref)
    handle.remove()
    assert_same_state(before, state_of(model))
    assert torch.equal(model(**inputs(8, 12, 0.6)), ref)


def test_an_unknown_model_is_told_how_to_register_an_adapter():
    class Unknown(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(2, 2)

    model = Unknown()
    for call in (lambda: find_adapter(model), lambda: dype_rope.patch(model)):
        with pytest.raises(TypeError) as err:
            call()
        message = str(err.value)
        assert "no adapter for Unknown" in message
        assert "register_adapter" in message and "docs/adapters.md" in message
        assert "FluxTransformer2DModel" in message and "QwenImageTransformer2DModel" in message
    assert not dype_rope.is_patched(model)
