"""What the Sana-WM row (adapters/families/by_sana_wm.py) does beyond the contract every row keeps
(tests/test_contract.py): its camera branch takes DyPE's tables, precomputed tables and foreign modules are refused,
a batch mixing times is refused above the base grid, SanaWMPipeline keeps its schedule under enable(); and the
stage-2 refiner's refusal, with its premise checked against the refiner's own code."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.row import complex_pairs, encoding_calls
from families.sana_wm import SANA_WM, TINY_SANA_WM
from families.tiny import tiny
from families.video import video_positions
from reference_dype import rope_pairs

AXES, THETA = (8, 8, 8), 10000.0


def reference(grid, base, t, **schedule):
    scales = (1.0, grid[1] / base[0], grid[2] / base[1])
    pairs = rope_pairs(video_positions(*grid), AXES, THETA, scales, t, (1.0, *base), **schedule)
    return torch.stack(pairs, -1)


def test_the_camera_branch_turns_by_dypes_tables():
    """UCPE's camera attention takes the first half of each axis's pairs (_slice_rope_for_cam: head 24 -> 12
    channels, pairs 0-1 of frames, 4-5 of rows, 8-9 of columns): it must see DyPE's numbers, not stock ones."""
    model = SANA_WM.build()
    grid, t = (2, 6, 7), 0.375
    seen = []
    hook = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[8][3]))
    try:
        with dype_rope.patch(model, base_grid=SANA_WM.base):
            SANA_WM.run(model, SANA_WM.inputs(grid, t))
    finally:
        hook.remove()
    want = reference(grid, SANA_WM.base, t)[:, [0, 1, 4, 5, 8, 9]]
    torch.testing.assert_close(complex_pairs(seen[0]), want, rtol=0, atol=SANA_WM.layout.tol)
    plain = reference(grid, SANA_WM.base, t, method="none")[:, [0, 1, 4, 5, 8, 9]]
    assert (complex_pairs(seen[0]) - plain).abs().max() > 1e-3  # not vacuous: the stock slice would fail


def test_precomputed_tables_are_refused_not_left_stock():
    model = SANA_WM.build()
    x = SANA_WM.inputs((2, 6, 7), 0.5)
    with dype_rope.patch(model, base_grid=SANA_WM.base):
        with pytest.raises(ValueError, match="precomputed `pos_embeds` bypass the RoPE module"):
            SANA_WM.run(model, dict(x, pos_embeds=model.rope.original((2, 6, 7))))
        cam = {"pos_embeds_cam": torch.ones(1, 1, 84, 6, dtype=torch.complex64)}
        with pytest.raises(ValueError, match=r"cam_pos_embeds\['pos_embeds_cam'\]"):
            SANA_WM.run(model, dict(x, cam_pos_embeds=cam))
        SANA_WM.run(model, x)  # the step state of a refused call does not linger


def test_a_module_off_its_theta_or_with_conjugated_tables_is_refused():
    """The probe compares sines as well as cosines: conjugated tables (every angle negated) have the same real
    part and must be refused too."""
    from diffusers.models.transformers.transformer_sana_wm import SanaWMRotaryPosEmbed

    model = SANA_WM.build()
    model.rope = SanaWMRotaryPosEmbed(TINY_SANA_WM["linear_head_dim"], (1, 1, 1), 64, theta=10500.0)
    with pytest.raises(TypeError, match="does not return plain RoPE with theta=10000"):
        dype_rope.patch(model)
    model = SANA_WM.build()
    model.rope.freqs = model.rope.freqs.conj()
    with pytest.raises(TypeError, match="does not return plain RoPE"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_a_model_built_without_rope_is_refused_with_a_message():
    with pytest.raises(TypeError, match="has no RoPE module at 'rope'"):
        dype_rope.patch(SANA_WM.build(use_pe=False))


def test_mixed_time_batches_are_refused_above_the_base_grid_and_stock_below_it():
    """The tables carry no batch dimension ([1, 1, L, D/2]): one plan per call."""
    model = SANA_WM.build()
    times = torch.tensor([[[0.0, 1000.0]], [[0.0, 400.0]]])  # [B, 1, F], the first frame the clean condition
    above = SANA_WM.make_inputs((2, 6, 7), batch=2, cond=None, seed=1)
    below = SANA_WM.make_inputs((2, 3, 4), batch=2, cond=None, seed=1)
    above["timestep"] = below["timestep"] = times
    ref = SANA_WM.run(model, below)
    with dype_rope.patch(model, base_grid=SANA_WM.base):
        assert torch.equal(SANA_WM.run(model, below), ref)
        with pytest.raises(ValueError, match="share one diffusion time"):
            SANA_WM.run(model, above)


def test_the_scale_counts_the_latent_in_32_pixel_tokens():
    """SanaWMPipeline's LTX-2 VAE (32x) and 1 x 1 patches: 704 x 1280 px is the 22 x 40 native grid."""
    model = SANA_WM.build()
    with dype_rope.patch(model, base_resolution=(704, 1280)) as handle:
        assert handle.base_grid == (22, 40)
        x = SANA_WM.inputs((2, 44, 40), 1.0)
        calls = encoding_calls(model, "rope", lambda: SANA_WM.run(model, x))
    want = reference((2, 44, 40), (22, 40), 1.0)
    torch.testing.assert_close(complex_pairs(calls[0][1]), want, rtol=0, atol=SANA_WM.layout.tol)


def test_enable_keeps_the_sana_wm_pipelines_fixed_shift_schedule():
    import diffusers

    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = diffusers.SanaWMPipeline(
        tokenizer=None, text_encoder=None, vae=None, transformer=SANA_WM.build(), scheduler=scheduler
    )
    scheduler.set_timesteps(12)
    want = scheduler.timesteps.clone()
    handle = dype_rope.enable(pipe, 1408, 2560)
    assert handle.mu is None and handle.image_seq_len == 44 * 80
    assert handle.transformer.adapter.name == "sana_wm"
    pipe.scheduler.set_timesteps(12)
    assert torch.equal(pipe.scheduler.timesteps, want)
    handle.remove()
    assert not dype_rope.is_patched(pipe.transformer)


TINY_REFINER = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, cross_attention_dim=24,
    audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=8,
    audio_cross_attention_dim=16, num_layers=1, caption_channels=16,
)


def test_the_refiner_is_refused_with_its_reason():
    model = tiny("SanaWMLTX2RefinerTransformer3DModel", TINY_REFINER)
    with pytest.raises(TypeError, match="does not patch SanaWMLTX2RefinerTransformer3DModel: .*keys stored after RoPE"):
        dype_rope.patch(model)


def test_the_refiners_history_keys_are_stored_rotated():
    """The refusal's premise, from the refiner's own code: the keys 'inject_and_capture_post_rope' stores are the
    pre-RoPE keys turned by the table of that call (LTX-2's interleaved rotation, written out here)."""
    from diffusers.models.transformers.transformer_sana_wm_refiner import SanaWMRefinerKVCache

    model = tiny("SanaWMLTX2RefinerTransformer3DModel", TINY_REFINER)
    frames, rows, cols = 2, 3, 4
    table = model.build_rotary_emb_for_absolute_positions(1, [1, 2], rows, cols, torch.device("cpu"), 16.0)
    g = torch.Generator().manual_seed(0)
    x = dict(
        hidden_states=torch.randn(1, frames * rows * cols, 4, generator=g),
        encoder_hidden_states=torch.randn(1, 5, 16, generator=g),
        timestep=torch.zeros(1, frames * rows * cols),
        video_rotary_emb=table,
    )
    cache = SanaWMRefinerKVCache(1)
    with torch.no_grad():
        model(**x, kv_cache=cache, kv_cache_mode="capture_pre_rope")
        model(**x, kv_cache=cache, kv_cache_mode="inject_and_capture_post_rope")
    pre, post = cache.get(0).get_captured_pre_rope()[0], cache.get(0).get_captured_post_rope()[0]
    cos, sin = table
    turned = torch.stack([-pre[..., 1::2], pre[..., 0::2]], dim=-1).flatten(-2)
    torch.testing.assert_close(post, pre * cos + turned * sin, rtol=0, atol=1e-6)
    assert (post - pre).abs().max() > 1e-2
