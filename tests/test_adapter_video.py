"""What the video families (Wan, HunyuanVideo) share and image families do not: frames keep plain RoPE unless the
base grid names a frame count, "isotropic" never mixes frames into the spatial ratio, base grids of two or three
sizes, 720p / 480p defaults from pixels. Then what only Wan or only HunyuanVideo has. The shared contract:
tests/test_contract.py."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.row import encoding_calls
from families.video import HUNYUAN_VIDEO, TINY_WAN, WAN, tiny_hunyuan_video, tiny_wan

VIDEO = pytest.mark.parametrize("row", [WAN, HUNYUAN_VIDEO], ids=lambda r: r.name)


def tables(row, model, x):
    calls = encoding_calls(model, row.encoding, lambda: row.run(model, x))
    return calls, row.layout.seen(calls)[0]


@VIDEO
def test_frames_keep_plain_rope_unless_a_frame_base_is_given(row):
    model, grid = row.build(), (12, 3, 4)  # more frames than the 4 of the base, a spatial grid inside it
    x = row.inputs(grid, 0.7)
    ref = row.run(model, x)
    stock_calls, stock = tables(row, model, x)
    with dype_rope.patch(model, base_grid=(4, 3, 4)):
        calls, got = tables(row, model, x)
    with dype_rope.patch(model, base_grid=(3, 4)):  # a 3-entry grid changed only its own patch
        assert torch.equal(row.run(model, x), ref)
    want = row.layout.expected(calls, grid, (4, 3, 4), 0.7, "per-axis", None)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=row.layout.tol)
    frames = row.layout.axes[0] // 2
    assert (got[:, :frames] - stock[:, :frames]).abs().max() > 1e-3  # the frame channels moved
    assert torch.equal(got[:, frames:], stock[:, frames:])  # and only they did


@VIDEO
def test_isotropic_does_not_mix_frames_into_the_spatial_ratio(row):
    model, grid, base = row.build(), (12, 6, 4), (2, 3, 4)
    with dype_rope.patch(model, base_grid=base, aspect="isotropic"):
        calls, got = tables(row, model, row.inputs(grid, 0.5))
    # frames: 12 / 2 = 6 of their own; rows 6 / 3 = 2 and columns 4 / 4 = 1 share the larger, 2
    want = row.layout.expected(calls, grid, base, 0.5, "isotropic", None)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=row.layout.tol)
    per_axis = row.layout.expected(calls, grid, base, 0.5, "per-axis", None)[0]
    assert (got - per_axis).abs().max() > 1e-3


@pytest.mark.parametrize("row, pixels, grid", [(WAN, (720, 1280), (45, 80)), (HUNYUAN_VIDEO, (544, 960), (34, 60))],
                         ids=["wan", "hunyuan_video"])
def test_base_resolution_converts_from_pixels(row, pixels, grid):
    with dype_rope.patch(row.build(), base_resolution=pixels) as handle:
        assert handle.base_grid == grid


@pytest.mark.parametrize("base_grid, message", [
    ((2, 3, 4, 5), r"base_grid=\(rows, columns\) or \(frames, rows, columns\)"),
    ((0, 4, 4), "base_grid must be positive"),
])
@VIDEO
def test_bad_base_grid_is_named(row, base_grid, message):
    model = row.build()
    with pytest.raises(ValueError, match=message):
        dype_rope.patch(model, base_grid=base_grid)
    assert not dype_rope.is_patched(model) and not model._forward_pre_hooks


# -- Wan --------------------------------------------------------------------------------------------------------

def test_wan22_5b_vae_gets_its_own_default_grid():
    with dype_rope.patch(tiny_wan(in_channels=48, out_channels=48)) as handle:
        assert handle.base_grid == (22, 40)


def test_wan_per_token_timesteps_take_the_generated_tokens_noise_level():
    model, grid = tiny_wan(), (3, 6, 8)
    per_token = torch.full((1, 3 * 6 * 8), 640.0)
    per_token[:, : 6 * 8] = 0.0  # Wan 2.2 TI2V: the conditioning first frame is clean
    with dype_rope.patch(model, base_grid=(4, 4)):
        calls, got = tables(WAN, model, WAN.inputs(grid, 0.64) | {"timestep": per_token})
        _, uniform = tables(WAN, model, WAN.inputs(grid, 0.64))
    assert torch.equal(got, uniform)
    want = WAN.layout.expected(calls, grid, (4, 4), 0.64, "per-axis", None)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=WAN.layout.tol)


def test_wan_rope_refuses_a_four_dim_latent():
    model = tiny_wan()
    with dype_rope.patch(model, base_grid=(4, 4)):
        with pytest.raises(ValueError, match=r"\[batch, channels, frames, height, width\]"):
            model.rope(torch.zeros(1, 4, 8, 8))


def test_wan_fused_table_path_matches_the_stock_processor():
    """Called with (cos, sin) tables [1, L, 1, D], the fused processor rotates through the table kernel and gives
    what WanAttnProcessor gives, also for tables whose two channels of a pair differ (Wan reads cos from the even
    channel and sin from the odd one)."""
    from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor

    from dype_rope.adapters.wan_fused import FusedWanAttnProcessor

    model = tiny_wan()
    attn = next(m for m in model.modules() if isinstance(m, WanAttention))  # self-attention
    dim = TINY_WAN["attention_head_dim"] * TINY_WAN["num_attention_heads"]
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 7, dim, generator=g)
    cos, sin = (torch.randn(1, 7, 1, TINY_WAN["attention_head_dim"], generator=g) for _ in range(2))

    def no_plan():
        raise AssertionError("the table path must not ask for a plan")

    with torch.no_grad():
        want = WanAttnProcessor()(attn, hidden, rotary_emb=(cos, sin))
        got = FusedWanAttnProcessor(no_plan)(attn, hidden, rotary_emb=(cos, sin))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# -- HunyuanVideo -----------------------------------------------------------------------------------------------

def test_hunyuan_video_axes_that_do_not_fill_the_head_are_named():
    m = tiny_hunyuan_video()
    m.rope.rope_dim = [4, 6, 8]
    original = m.rope
    with pytest.raises(ValueError, match="sum to 18, but the attention head dim is 16"):
        dype_rope.patch(m)
    assert m.rope is original and not m._forward_pre_hooks and not dype_rope.is_patched(m)
