"""What only the families handed their tables (adapters/mechanisms/passed.py) and the refused ones have: refusals
with their reasons, tables that do not fit the latent, tables the row does not describe, mixed-time batches.
The contract (tests/test_contract.py) runs every other check on their rows."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.passed import ALLEGRO, COGVIDEOX, COSMOS, cogvideox_tables, tiny_cogvideox, tiny_cosmos
from families.tiny import tiny


def test_cogvideox_1_0_and_the_no_rope_configuration_are_refused_with_the_reason():
    with pytest.raises(TypeError, match="CogVideoX 1.0 .* already interpolates"):
        dype_rope.patch(tiny_cogvideox(patch_size_t=None))
    with pytest.raises(TypeError, match="no RoPE"):
        dype_rope.patch(tiny_cogvideox(use_rotary_positional_embeddings=False, use_learned_positional_embeddings=False))


def test_hunyuan_dit_and_lumina_next_are_refused_with_the_reason():
    hunyuan = tiny(
        "HunyuanDiT2DModel",
        dict(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
             cross_attention_dim=8, cross_attention_dim_t5=8, pooled_projection_dim=4, hidden_size=16,
             text_len=4, text_len_t5=4),
    )
    with pytest.raises(TypeError, match="HunyuanDiT2DModel: .*32 x 32 position box"):
        dype_rope.patch(hunyuan)
    lumina = tiny(
        "LuminaNextDiT2DModel",
        dict(sample_size=8, patch_size=2, in_channels=4, hidden_size=16, num_layers=1, num_attention_heads=2,
             num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5, learn_sigma=False,
             qk_norm=True, cross_attention_dim=8, scaling_factor=1.0),
    )
    with pytest.raises(TypeError, match="LuminaNextDiT2DModel: .*time-aware scaled RoPE"):
        dype_rope.patch(lumina)


def test_tables_that_do_not_fit_the_latent_are_refused():
    model = tiny_cogvideox()
    x = COGVIDEOX.inputs((2, 6, 7), 0.5)
    x["image_rotary_emb"] = cogvideox_tables((2, 6, 6))  # the pipeline's tables of another grid
    with dype_rope.patch(model, base_grid=COGVIDEOX.base):
        with pytest.raises(ValueError, match=r"tables of shape \(72, 16\).*2 x 6 x 7 tokens"):
            COGVIDEOX.run(model, x)
        x["image_rotary_emb"] = None
        with pytest.raises(ValueError, match="image_rotary_emb=NoneType"):
            COGVIDEOX.run(model, x)


def test_a_model_whose_pipeline_tables_the_row_does_not_describe_is_refused(monkeypatch):
    """The install probe compares the pipeline function's tables with the row's layout: a theta 5% off fails."""
    import diffusers.models.embeddings as embeddings

    stock = embeddings.get_3d_rotary_pos_embed
    monkeypatch.setattr(embeddings, "get_3d_rotary_pos_embed", lambda *a, **k: stock(*a, **{**k, "theta": 10500}))
    with pytest.raises(TypeError, match="not interleaved RoPE with theta=10000.0"):
        dype_rope.patch(tiny_cogvideox())


def test_the_callers_tables_are_left_untouched():
    model = tiny_cogvideox()
    x = COGVIDEOX.inputs((2, 6, 7), 0.5)
    before = [t.clone() for t in x["image_rotary_emb"]]
    with dype_rope.patch(model, base_grid=COGVIDEOX.base):
        COGVIDEOX.run(model, x)
    assert all(torch.equal(a, b) for a, b in zip(before, x["image_rotary_emb"]))


def test_mixed_time_batches_follow_the_one_plan_per_call_rule():
    """The tables carry no batch dimension: below the base grid any batch passes bit for bit; above it a batch of
    different times is refused (on host values), one of equal times is each sample run alone."""
    model = tiny_cogvideox()
    mixed = torch.tensor([900, 300])
    below = COGVIDEOX.inputs((2, 3, 4), 0.5, batch=2)
    below["timestep"] = mixed
    stock = COGVIDEOX.run(model, below)
    above = COGVIDEOX.inputs((2, 6, 7), 0.5, batch=2)
    with dype_rope.patch(model, base_grid=COGVIDEOX.base):
        assert torch.equal(COGVIDEOX.run(model, below), stock)
        both = COGVIDEOX.run(model, above)
        for i in range(2):
            alone = {k: (v[i : i + 1] if torch.is_tensor(v) and k != "image_rotary_emb" else v) for k, v in above.items()}
            torch.testing.assert_close(COGVIDEOX.run(model, alone), both[i : i + 1], rtol=1e-5, atol=1e-5)
        above["timestep"] = mixed
        with pytest.raises(ValueError, match="share one diffusion time"):
            COGVIDEOX.run(model, above)


@pytest.mark.parametrize("row", [COGVIDEOX, ALLEGRO], ids=lambda r: r.name)
def test_gradient_checkpointing_passes_the_tables_positionally_and_still_gets_dype(row):
    model = row.build()
    x = row.inputs((2, 6, 7), 0.7)
    stock = row.run(model, x)
    with dype_rope.patch(model, base_grid=row.base):
        want = row.run(model, x)
        model.enable_gradient_checkpointing()
        model.train()
        got = row.output(model(**x))
    assert not torch.allclose(want, stock, atol=1e-4)  # DyPE is active at this grid
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-5)


def test_allegro_tables_that_do_not_fit_the_latent_are_refused():
    from families.passed import allegro_tables

    model = ALLEGRO.build()
    x = ALLEGRO.inputs((2, 6, 7), 0.5)
    x["image_rotary_emb"] = allegro_tables((2, 6, 6))
    with dype_rope.patch(model, base_grid=ALLEGRO.base):
        with pytest.raises(ValueError, match=r"per-axis tables of shapes .*2 x 6 x 7 tokens"):
            ALLEGRO.run(model, x)


def test_cosmos_1_0_is_refused_with_the_reason():
    with pytest.raises(TypeError, match="Cosmos 1.0 .*c_noise"):
        dype_rope.patch(tiny_cosmos(extra_pos_embed_type="learnable"))


def test_a_cosmos_rope_module_of_another_layout_is_refused():
    """The install probe calls the stock module: interleaved pairs instead of halves are not this row."""
    from diffusers.models.transformers.transformer_cosmos import CosmosRotaryPosEmbed

    class Interleaved(CosmosRotaryPosEmbed):
        def forward(self, hidden_states, fps=None):
            cos, sin = super().forward(hidden_states, fps)
            d = cos.shape[-1] // 2
            return (torch.stack([cos[:, :d], cos[:, d:]], -1).flatten(1), torch.stack([sin[:, :d], sin[:, d:]], -1).flatten(1))

    model = tiny_cosmos()
    c = model.config
    model.rope = Interleaved(c.attention_head_dim, c.max_size, c.patch_size, rope_scale=c.rope_scale)
    with pytest.raises(TypeError, match="in halves; this row does not describe the module"):
        dype_rope.patch(model)


def test_cosmos_per_frame_times_read_the_generated_frames_time():
    """Cosmos 2.5's video2world passes [B, 1, F, 1, 1]: the first frames are conditioning at their own time, the
    last is generated; the tables are those of a call at the generated frames' time."""
    model = tiny_cosmos()
    grid = (2, 6, 7)
    per_frame = COSMOS.inputs(grid, 0.8)
    per_frame["timestep"] = torch.tensor([0.1, 0.8]).view(1, 1, 2, 1, 1)
    one = COSMOS.inputs(grid, 0.8)
    with dype_rope.patch(model, base_grid=COSMOS.base):
        _, seen = recorded_tables(model, per_frame)
        _, want = recorded_tables(model, one)
    assert all(torch.equal(a, b) for a, b in zip(seen, want))


def recorded_tables(model, x):
    from families.row import encoding_calls

    out = []
    calls = encoding_calls(model, "rope", lambda: out.append(COSMOS.run(model, x)))
    return out[0], [t for _, o in calls for t in o]


def test_enable_on_the_cogvideox_pipeline_patches_the_transformer_and_leaves_its_schedule_alone():
    """CogVideoXPipeline has no resolution shift: enable() patches only; the pipeline builds its own tables, which
    the model then follows DyPE on above the base grid and keeps as they are at it."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline

    from families.passed import COGVIDEOX_SCHEDULER

    scheduler = CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER)
    config = scheduler._internal_dict
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=tiny_cogvideox(), scheduler=scheduler)
    emb = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(0))

    def run(height, width):
        g = torch.Generator().manual_seed(3)
        return pipe(prompt_embeds=emb, height=height, width=width, num_frames=9, num_inference_steps=2,
                    output_type="latent", guidance_scale=1.0, generator=g).frames

    at, above = run(48, 64), run(96, 112)  # 3 x 4 tokens (the base grid below), 6 x 7
    with pytest.raises(ValueError, match="no resolution shift"):
        dype_rope.enable(pipe, 96, 112, shift="linear", base_grid=(3, 4))
    handle = dype_rope.enable(pipe, 96, 112, base_grid=(3, 4))
    assert handle.mu is None and handle.image_seq_len == 6 * 7 and "set_timesteps" not in vars(scheduler)
    assert torch.equal(run(48, 64), at)
    assert not torch.allclose(run(96, 112), above, atol=1e-4)
    handle.remove()
    assert scheduler._internal_dict is config and not dype_rope.is_patched(pipe.transformer)
    assert torch.equal(run(96, 112), above)


def test_allegro_yarn_counts_its_base_length_in_the_tables_position_units():
    """Allegro's positions are token / interpolation_scale: YaRN's base length is the base grid in those units.
    The contract's tiny grids leave YaRN's ramps saturated; 8 pairs per axis and a 16 x 20 base do not, so a base
    length counted in tokens fails here."""
    from families.passed import AxisTablesLayout, allegro_tables, tiny_allegro
    from families.row import encoding_calls

    model = tiny_allegro(attention_head_dim=48, cross_attention_dim=96)
    layout = AxisTablesLayout(axes=(16, 16, 16), theta=10000.0, position_scales=(2.2, 2.0, 2.0))
    grid, base = (1, 40, 44), (16, 20)
    x = ALLEGRO.inputs(grid, 1.0)
    x["image_rotary_emb"] = allegro_tables(grid, head_dim=48)
    with dype_rope.patch(model, method="yarn", base_grid=base):
        calls = encoding_calls(model, ALLEGRO.encoding, lambda: ALLEGRO.run(model, x))
    got, want = layout.seen(calls), layout.expected(calls, grid, base, 1.0, "per-axis", None, method="yarn")
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=2e-7)
