"""What only HiDream-I1 has: exactly three RoPE axes, refused otherwise. The shared contract:
tests/test_contract.py."""

from __future__ import annotations

import pytest

import dype_rope
from families.hidream import tiny_hidream


def test_wrong_number_of_axes_is_named_and_leaves_the_model_untouched():
    m = tiny_hidream(axes_dims_rope=(4, 4), attention_head_dim=8)
    embedder = m.pe_embedder
    with pytest.raises(ValueError, match="3 RoPE axes"):
        dype_rope.patch(m)
    assert m.pe_embedder is embedder and not dype_rope.is_patched(m)
    assert not m._forward_pre_hooks and not m._forward_hooks
