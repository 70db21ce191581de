"""N-axis RoPE reference: bit-exact with diffusers at s <= 1, float64-exact with scaled plans, both layouts."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed
from diffusers.models.transformers.transformer_flux import FluxPosEmbed
from hypothesis import given
from hypothesis import strategies as st

from dype_rope import DyPEConfig, apply_rope, apply_rope_plan, build_plan, plain_plan, rope_tables
from dype_rope.rope import rotate_pairs

F64 = torch.float64


def flux_ids(h, w, text=7):
    img = torch.zeros(h * w, 3)
    img[:, 1] = torch.arange(h).repeat_interleave(w)
    img[:, 2] = torch.arange(w).repeat(h)
    return torch.cat([torch.zeros(text, 3), img])


@pytest.mark.parametrize("axes, theta, grid", [((16, 56, 56), 10000, (64, 64)), ((4, 6, 6), 10000, (13, 9)),
                                               ((8, 24, 24, 8), 2000, (5, 3))])
def test_plain_tables_equal_fluxposembed_bit_for_bit(axes, theta, grid):
    ids = flux_ids(*grid)
    if len(axes) == 4:
        ids = torch.cat([ids, (ids[:, 1:2] * 3) % 5], dim=1)
    ref_cos, ref_sin = FluxPosEmbed(theta=theta, axes_dim=list(axes))(ids)
    cos, sin = rope_tables(ids, plain_plan(axes, theta), "interleaved")
    assert cos.dtype == torch.float32
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)


@pytest.mark.parametrize("sequence_dim", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_rope_equals_diffusers_bit_for_bit(sequence_dim, dtype):
    ids = flux_ids(6, 5)
    cos, sin = FluxPosEmbed(theta=10000, axes_dim=[4, 6, 6])(ids)
    shape = (2, ids.shape[0], 3, 16) if sequence_dim == 1 else (2, 3, ids.shape[0], 16)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    ref = apply_rotary_emb(x, (cos, sin), sequence_dim=sequence_dim)
    assert torch.equal(apply_rope(x, cos, sin, "interleaved", sequence_dim), ref)


def test_half_layout_equals_diffusers_unbind_minus_2():
    pos = torch.arange(11).float()
    cos, sin = get_1d_rotary_pos_embed(12, pos, theta=500.0, use_real=True, repeat_interleave_real=False,
                                       freqs_dtype=F64)
    ours = rope_tables(pos[:, None], plain_plan([12], 500.0), "half")
    assert torch.equal(ours[0], cos) and torch.equal(ours[1], sin)
    x = torch.randn(1, 2, 11, 12)
    ref = apply_rotary_emb(x, (cos, sin), use_real_unbind_dim=-2, sequence_dim=2)
    assert torch.equal(apply_rope(x, *ours, "half", sequence_dim=2), ref)


def float64_rotation(x, positions, plan, layout):
    """Independent reference: rotate every pair by its angle in float64, pair by pair."""
    inv, ms, axis = (p.to(F64) for p in plan)
    x = x.to(F64)
    d = x.shape[-1]
    out = torch.empty_like(x)
    for j in range(d // 2):
        a, b = (2 * j, 2 * j + 1) if layout == "interleaved" else (j, j + d // 2)
        ang = positions[..., int(axis[j])].to(F64) * inv[..., j : j + 1]  # [L] or [B, L]
        c, s = torch.cos(ang) * ms[..., j : j + 1], torch.sin(ang) * ms[..., j : j + 1]
        c, s = c.unsqueeze(-1), s.unsqueeze(-1)  # [.., L, 1]: broadcast over the heads of x [B, L, H, D]
        out[..., a] = x[..., a] * c - x[..., b] * s
        out[..., b] = x[..., b] * c + x[..., a] * s
    return out


@given(layout=st.sampled_from(["interleaved", "half"]), t=st.floats(0, 1), sx=st.floats(0.5, 8), sy=st.floats(0.5, 8),
       method=st.sampled_from(["pi", "ntk", "yarn", "none"]))
def test_scaled_plan_rotation_matches_float64(layout, t, sx, sy, method):
    axes = (4, 10, 6)
    plan = build_plan(axes, 10000.0, torch.tensor([1.0, sx, sy], dtype=F64), torch.tensor(t, dtype=F64),
                      DyPEConfig(method=method), base_lens=(1.0, 8.0, 8.0))
    g = torch.Generator().manual_seed(3)
    positions = torch.randint(0, 300, (13, 3), generator=g)
    x = torch.randn(2, 13, 3, 20, generator=g)
    out = apply_rope_plan(x, positions, plan, layout, sequence_dim=1)
    ref = float64_rotation(x, positions, plan, layout)
    torch.testing.assert_close(out.to(F64), ref, rtol=0, atol=2e-6 * plan.mscale.max().item())


def test_batched_plan_gives_one_table_per_sample():
    cfg = DyPEConfig(method="yarn")
    t = torch.tensor([1.0, 0.3], dtype=F64)
    plan = build_plan((4, 6, 6), 10000.0, torch.tensor([1.0, 3.0, 2.0], dtype=F64), t, cfg, (1, 8, 8))
    assert plan.inv_freq.shape == (2, 8) and plan.mscale.shape == (2, 8)
    ids = flux_ids(4, 5)
    cos, sin = rope_tables(ids, plan)
    assert cos.shape == (2, ids.shape[0], 16)
    for b in range(2):
        one = build_plan((4, 6, 6), 10000.0, torch.tensor([1.0, 3.0, 2.0], dtype=F64), t[b], cfg, (1, 8, 8))
        c1, s1 = rope_tables(ids, one)
        assert torch.equal(cos[b], c1) and torch.equal(sin[b], s1)
    x = torch.randn(2, ids.shape[0], 2, 16)
    torch.testing.assert_close(apply_rope(x, cos, sin), float64_rotation(x, ids.expand(2, -1, -1), plan, "interleaved")
                               .float(), rtol=0, atol=1e-5)


def test_mscale_multiplies_cos_and_sin_of_rescaled_axes_only():
    s = 4.0
    plan = build_plan((4, 6, 6), 10000.0, torch.tensor([1.0, s, 1.0], dtype=F64), torch.tensor(0.5, dtype=F64),
                      DyPEConfig(method="yarn"), (1, 8, 8))
    expected = [1.0] * 2 + [0.1 * math.log(s) + 1] * 3 + [1.0] * 3
    torch.testing.assert_close(plan.mscale, torch.tensor(expected, dtype=F64), rtol=1e-15, atol=0)
    cos, sin = rope_tables(torch.zeros(1, 3), plan)  # position 0: cos = mscale, sin = 0
    torch.testing.assert_close(cos[0], torch.tensor(expected).repeat_interleave(2), rtol=1e-7, atol=0)
    assert torch.equal(sin, torch.zeros_like(sin))


def test_rotate_pairs_is_a_quarter_turn():
    x = torch.arange(8.0)
    assert rotate_pairs(x, "interleaved").tolist() == [-1, 0, -3, 2, -5, 4, -7, 6]
    assert rotate_pairs(x, "half").tolist() == [-4, -5, -6, -7, 0, 1, 2, 3]


@pytest.mark.parametrize("call, message", [
    (lambda: build_plan((4, 5), 1e4, torch.ones(2, dtype=F64), torch.tensor(1.0), DyPEConfig()), "axis 1 has 5"),
    (lambda: build_plan((4, 6), 1e4, torch.ones(3, dtype=F64), torch.tensor(1.0), DyPEConfig()), "scales has 3 axes"),
    (lambda: rope_tables(torch.zeros(3, 2), plain_plan((4, 6), 1e4), "spiral"), "unknown RoPE layout"),
    (lambda: apply_rope(torch.zeros(1, 3, 1, 6), torch.zeros(3, 8), torch.zeros(3, 8)), "do not fit"),
    (lambda: apply_rope(torch.zeros(1, 3, 1, 8), torch.zeros(3, 8), torch.zeros(3, 8), sequence_dim=3), "sequence_dim"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
