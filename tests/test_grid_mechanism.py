"""What the grid mechanism (adapters/mechanisms/grid.py) does beyond the contract every row keeps
(tests/test_contract.py): refusing modules its row does not describe, mixed-time batches, per-frame timesteps,
the stock module's buffers following the model, Kandinsky's own RoPE scale, refused families."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from dype_rope.timestep import MIXED_TIMES
from families.grid import (
    HELIOS, HUNYUAN_IMAGE, KANDINSKY5, SKYREELS_V2, TINY_HUNYUAN_IMAGE, TINY_WAN_LIKE, chrono_positions, video_positions,
)
from families.row import encoding_calls, interleaved, matrix_pairs
from families.tiny import tiny
from reference_dype import rope_pairs


def tables(row, model, x):
    calls = encoding_calls(model, row.encoding, lambda: row.run(model, x))
    return row.layout.seen(calls)


def reference(positions, axes, theta, scales, t, base_lens, **schedule):
    return torch.stack(rope_pairs(positions, axes, theta, scales, t, base_lens, **schedule), -1)


def test_a_module_off_its_declared_theta_is_refused():
    """A SkyReels model whose RoPE was built with theta 5% off the row's 10000: patched, it would be wrong."""
    from diffusers.models.transformers.transformer_skyreels_v2 import SkyReelsV2RotaryPosEmbed

    model = SKYREELS_V2.build()
    model.rope = SkyReelsV2RotaryPosEmbed(TINY_WAN_LIKE["attention_head_dim"], (1, 2, 2), 64, theta=10500.0)
    with pytest.raises(TypeError, match="does not return plain RoPE with theta=10000"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_a_module_of_another_class_is_refused_by_name():
    model = SKYREELS_V2.build()
    model.rope = torch.nn.Identity()
    with pytest.raises(TypeError, match="is torch.nn.modules.linear.Identity, not .*SkyReelsV2RotaryPosEmbed"):
        dype_rope.patch(model)


def test_hunyuan_image_with_a_three_axis_rope_is_refused_not_misread():
    """The refiner's configuration (frames, rows, columns): the 2-axis row would rescale frames and rows."""
    model = tiny("HunyuanImageTransformer2DModel", TINY_HUNYUAN_IMAGE, rope_axes_dim=(4, 6, 6), patch_size=(1, 1, 1))
    with pytest.raises(TypeError, match="has 3 RoPE axes; the hunyuan_image row describes 2"):
        dype_rope.patch(model)


def test_mixed_time_batches_are_refused_above_the_base_grid_and_stock_below_it():
    """The tables carry no batch dimension: one plan per call, as the existing video adapters."""
    model = SKYREELS_V2.build()
    times = torch.tensor([1000.0, 400.0])
    above = SKYREELS_V2.make_inputs((2, 6, 7), batch=2, cond=None, seed=1)
    below = SKYREELS_V2.make_inputs((2, 3, 4), batch=2, cond=None, seed=1)
    above["timestep"] = below["timestep"] = times
    ref = SKYREELS_V2.run(model, below)
    with dype_rope.patch(model, base_grid=(3, 4)):
        assert torch.equal(SKYREELS_V2.run(model, below), ref)
        with pytest.raises(ValueError, match="share one diffusion time"):
            SKYREELS_V2.run(model, above)
    assert MIXED_TIMES.startswith("all samples")


def test_per_frame_timesteps_take_the_noisiest_frame():
    """SkyReels V2's diffusion forcing passes one timestep per latent frame [B, F]; the frames being generated sit
    at the largest, the rest at or near 0. The scale's time is the largest."""
    model = SKYREELS_V2.build()
    x = SKYREELS_V2.make_inputs((2, 6, 7), batch=1, cond=None, seed=1)
    x.update(timestep=torch.tensor([[0.0, 375.0]]), enable_diffusion_forcing=True)
    with dype_rope.patch(model, base_grid=(3, 4), method="pi", lambda_s=1.0, lambda_t=1.0):
        got = tables(SKYREELS_V2, model, x)
    want = reference(video_positions(2, 6, 7), (6, 6, 6), 10000.0, (1.0, 2.0, 7 / 4), 0.375, (1.0, 3.0, 4.0),
                     method="pi", lambdas=(1.0, 1.0))
    torch.testing.assert_close(got[0], want, rtol=0, atol=2e-7)


def test_the_stock_module_follows_the_model_across_dtype_and_device_moves():
    """The stock module is kept outside the module tree (names and state_dict unchanged), so model.to() must still
    reach its buffers (Wan-style modules index precomputed float64 tables)."""
    model = SKYREELS_V2.build()
    with dype_rope.patch(model):
        model.half()
        assert model.rope.original.freqs_cos.dtype == torch.float16
    assert model.rope.freqs_cos.dtype == torch.float16


def test_kandinsky_scale_factor_divides_the_positions_dype_rescales():
    """Kandinsky 5's own RoPE scale (its pipelines pass (1, 2, 2) or (1, 3.16, 3.16)) stays: the angles are
    (index / scale_factor) x DyPE's frequencies, the size ratio counts tokens against the base grid."""
    model = KANDINSKY5.build()
    x = KANDINSKY5.inputs((2, 6, 7), 0.375)
    x["scale_factor"] = (1.0, 3.16, 3.16)
    with dype_rope.patch(model, base_grid=(3, 4)):
        calls = encoding_calls(model, KANDINSKY5.encoding, lambda: KANDINSKY5.run(model, x))
    got = matrix_pairs(calls[0][1])
    positions = video_positions(2, 6, 7) / torch.tensor([1.0, 3.16, 3.16], dtype=torch.float64)
    want = reference(positions, (4, 6, 6), 10000.0, (1.0, 2.0, 7 / 4), 0.375, (1.0, 3.0, 4.0))
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def test_chronoedit_two_frame_calls_keep_their_temporal_skip():
    """Hand-derived: ChronoEdit's second frame sits at temporal_skip_len - 1 = 7 (frames keep plain RoPE)."""
    pos = chrono_positions(2, 1, 1)
    assert pos[:, 0].tolist() == [0.0, 7.0]


@pytest.mark.parametrize(
    "name, config",
    [
        ("EasyAnimateTransformer3DModel", dict(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                               out_channels=4, time_embed_dim=8, text_embed_dim=16, num_layers=1,
                                               sample_width=8, sample_height=8, patch_size=2)),
        ("MochiTransformer3DModel", dict(patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=1,
                                         pooled_projection_dim=8, in_channels=4, text_embed_dim=16, time_embed_dim=4)),
    ],
)
def test_refused_families_say_why(name, config):
    model = tiny(name, config)
    with pytest.raises(TypeError, match=f"does not patch {name}: .* (range|trained)"):
        dype_rope.patch(model)


def test_hunyuan_image_interleaved_tables_are_read_as_the_module_lays_them_out():
    """A sanity anchor for the HunyuanImage row's reader: the stock module's table at base equals plain RoPE."""
    model = HUNYUAN_IMAGE.build()
    calls = encoding_calls(model, "rope", lambda: HUNYUAN_IMAGE.run(model, HUNYUAN_IMAGE.inputs((3, 4), 1.0)))
    got = interleaved(*calls[0][1])
    positions = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij"), -1).reshape(-1, 2)
    want = reference(positions.double(), (8, 8), 256.0, (1.0, 1.0), 1.0, (1.0, 1.0))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def sample(x: dict, i: int, batch: int) -> dict:
    """Sample i of batched inputs: every top-level tensor with the batch in front, sliced."""
    return {k: v[i : i + 1] if torch.is_tensor(v) and v.dim() and v.shape[0] == batch else v for k, v in x.items()}


@pytest.mark.parametrize("row", [HELIOS, KANDINSKY5], ids=lambda r: r.name)
def test_tables_with_a_batch_dimension_get_one_plan_per_sample(row):
    """A batch whose samples sit at different times (batched serving): each sample's tables are the ones it gets
    alone, bit for bit, and so is its output up to the batch's own float rounding."""
    model, batch = row.build(), 3
    x = row.make_inputs((2, 6, 7), batch=batch, cond=None, seed=1)
    x[row.time_arg] = row.pipeline_time(torch.tensor([1000.0, 400.0, 0.0]))
    with dype_rope.patch(model, base_grid=(3, 4)):
        out = []
        calls = encoding_calls(model, row.encoding, lambda: out.append(row.run(model, x)))
        for i in range(batch):
            alone = []
            single = encoding_calls(model, row.encoding, lambda: alone.append(row.run(model, sample(x, i, batch))))
            for (_, got), (_, want) in zip(calls, single):
                got = got[i : i + 1] if got.shape[0] == batch else got
                assert torch.equal(got, want), (i, row.name)
            torch.testing.assert_close(out[0][i : i + 1], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aspect", ["per-axis", "isotropic"])
def test_a_base_grid_with_frames_rescales_the_frames_too(aspect):
    """base_grid=(frames, rows, columns): frames get their own ratio (2 here), rows and columns theirs ("isotropic"
    shares the larger between rows and columns only)."""
    model = SKYREELS_V2.build()
    x = SKYREELS_V2.inputs((2, 6, 7), 0.375)
    with dype_rope.patch(model, base_grid=(1, 3, 4), aspect=aspect) as handle:
        assert handle.base_grid == (1, 3, 4)
        got = tables(SKYREELS_V2, model, x)
    rows, cols = (2.0, 2.0) if aspect == "isotropic" else (2.0, 7 / 4)
    want = reference(video_positions(2, 6, 7), (6, 6, 6), 10000.0, (2.0, rows, cols), 0.375, (1.0, 3.0, 4.0))
    torch.testing.assert_close(got[0], want, rtol=0, atol=2e-7)
    with dype_rope.patch(model, base_grid=(3, 4)):  # the class default stays spatial-only
        spatial = tables(SKYREELS_V2, model, x)
    assert not torch.equal(spatial[0], got[0])


def test_a_base_grid_with_frames_is_stock_at_its_own_size():
    model = SKYREELS_V2.build()
    x = SKYREELS_V2.inputs((5, 3, 4), 1.0)
    ref = SKYREELS_V2.run(model, x)
    with dype_rope.patch(model, base_grid=(5, 3, 4)):
        assert torch.equal(SKYREELS_V2.run(model, x), ref)
