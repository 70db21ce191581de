"""What only Qwen-Image has: centred positions, base grid overrides on its 1328 px default, tables that must never
come from a cache built for another t or size, the refused layered variant, and the fused processor's
complex-table path. The shared contract: tests/test_contract.py."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.qwen_image import QWEN_IMAGE, TINY_QWEN_IMAGE, centred, hand_positions, tiny_qwen_image
from families.row import encoding_calls
from reference_dype import rope_pairs

BASE = QWEN_IMAGE.base


def image_table(model, grid, t):
    calls = encoding_calls(model, "pos_embed", lambda: QWEN_IMAGE.run(model, QWEN_IMAGE.inputs(grid, t)))
    return calls[0][1][0]  # the image tokens' complex table


def test_centred_positions_written_out():
    assert centred(5) == [-3, -2, -1, 0, 1] and centred(4) == [-2, -1, 0, 1]


def test_base_grid_overrides():
    model = tiny_qwen_image()
    with dype_rope.patch(model, base_resolution=1024) as handle:
        assert handle.base_grid == (64, 64)
    with dype_rope.patch(model, base_grid=(50, 70)) as handle:
        assert handle.base_grid == (50, 70)


def test_tables_are_never_reused_across_t_or_size():
    model = tiny_qwen_image()
    with dype_rope.patch(model, base_grid=BASE):
        first = image_table(model, (8, 12), 1.0)
        other_t = image_table(model, (8, 12), 0.2)
        again = image_table(model, (8, 12), 1.0)
        other_size = image_table(model, (8, 10), 0.2)
    assert not torch.equal(first, other_t)  # Dy-YaRN's frequencies move with t
    assert torch.equal(first, again) and first is not again
    cos, sin = rope_pairs(hand_positions((8, 10), None)[0], (8, 12, 12), 10000.0, [1.0, 2.0, 10 / 6], 0.2, (1.0, *BASE))
    torch.testing.assert_close(other_size.to(torch.complex128), torch.complex(cos, sin), atol=1e-5, rtol=0)
    # and the stock encoding's own cache is left as it was: unpatched, the stock table comes back
    stock = image_table(tiny_qwen_image(), (8, 12), 1.0)
    assert not torch.equal(stock, first)
    assert torch.equal(image_table(model, (8, 12), 1.0), stock)


def test_layered_variant_is_refused_clearly():
    model = tiny_qwen_image(use_layer3d_rope=True)
    with pytest.raises(TypeError, match="use_layer3d_rope"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_fused_complex_table_path_matches_the_stock_processor():
    """Called with Qwen-Image's complex freqs_cis, the fused processor rotates through the table kernel (real and
    imaginary parts as cos and sin) and gives what QwenDoubleStreamAttnProcessor2_0 gives."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

    from dype_rope.adapters.qwen_image_fused import FusedQwenDoubleStreamAttnProcessor
    from dype_rope.rope_formats import complex_table

    model = tiny_qwen_image()
    attn = next(m for m in model.modules() if isinstance(m, Attention))
    dim = TINY_QWEN_IMAGE["attention_head_dim"] * TINY_QWEN_IMAGE["num_attention_heads"]
    g = torch.Generator().manual_seed(0)
    hidden, text = torch.randn(1, 6, dim, generator=g), torch.randn(1, 3, dim, generator=g)
    plan = dype_rope.plain_plan(TINY_QWEN_IMAGE["axes_dims_rope"], 10000.0)
    plan = plan._replace(mscale=torch.full_like(plan.mscale, 1.3))  # a magnitude other than 1 must carry over
    freqs = tuple(complex_table(torch.randint(-20, 20, (n, 3)).float(), plan) for n in (6, 3))

    def no_plan():
        raise AssertionError("the table path must not ask for a plan")

    with torch.no_grad():
        want = QwenDoubleStreamAttnProcessor2_0()(attn, hidden, text, image_rotary_emb=freqs)
        got = FusedQwenDoubleStreamAttnProcessor(no_plan)(attn, hidden, text, image_rotary_emb=freqs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
