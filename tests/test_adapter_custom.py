"""Registering an adapter for your own DiT: the example in docs/adapters.md runs as written and joins the family
table as the row "my-dit" (tests/families/embednd.py), so the whole contract of tests/test_contract.py holds for
it; here, what an unknown model is told."""

from __future__ import annotations

import pytest
from torch import nn

import dype_rope
from dype_rope.adapters import find_adapter
from families.embednd import documented_adapter, my_dit


def test_the_documented_adapter_is_the_one_found():
    with dype_rope.patch(my_dit(), base_grid=(4, 6)) as handle:
        assert isinstance(handle.adapter, documented_adapter()) and handle.adapter.name == "my-dit"


def test_an_unknown_model_is_told_how_to_register_an_adapter():
    class Unknown(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(2, 2)

    model = Unknown()
    for call in (lambda: find_adapter(model), lambda: dype_rope.patch(model), lambda: dype_rope.patch(nn.Linear(2, 2))):
        with pytest.raises(TypeError) as err:
            call()
        message = str(err.value)
        assert "no adapter for" in message and ("Unknown" in message or "Linear" in message)
        assert "register_adapter" in message and "docs/adapters.md" in message
        assert "FluxTransformer2DModel" in message and "QwenImageTransformer2DModel" in message
    assert not dype_rope.is_patched(model)
