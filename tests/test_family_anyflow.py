"""What AnyFlow's row (adapters/families/by_anyflow.py) does beyond the contract (tests/test_contract.py): its
complex tables against a hand-built reference, a module off its declared theta refused, mixed-time batches,
conditioning frames at timestep 0, and dype_rope.enable() on AnyFlowPipeline."""

from __future__ import annotations

import inspect

import pytest
import torch

import dype_rope
from families.anyflow import ANYFLOW, FLOW_MAP, TINY_ANYFLOW, anyflow_inputs
from families.row import complex_pairs, encoding_calls
from families.tiny import tiny
from families.video import video_positions
from reference_dype import rope_pairs


def tables(model, x):
    calls = encoding_calls(model, "rope", lambda: ANYFLOW.run(model, x))
    return [complex_pairs(out["query"]) for _, out in calls]


def test_stock_tables_are_plain_rope_on_frames_rows_columns():
    """Hand-derived: head 18 -> 6 / 6 / 6 channels, theta 10000, arange positions frames-major."""
    model = ANYFLOW.build()
    got = tables(model, ANYFLOW.inputs((2, 3, 4), 1.0))
    pos = video_positions(2, 3, 4)
    omega = 10000.0 ** (-torch.arange(0, 6, 2, dtype=torch.float64) / 6)
    angles = torch.cat([pos[:, a : a + 1] * omega for a in range(3)], dim=-1)
    torch.testing.assert_close(got[0], torch.stack([angles.cos(), angles.sin()], -1), rtol=0, atol=1e-15)


def test_a_module_whose_tables_are_off_its_theta_is_refused():
    """A module that caches tables built at theta 10500 while its attribute says 10000: patched from the
    attribute, it would be wrong; the probe of its real output tells."""
    from diffusers.models.transformers.transformer_anyflow import AnyFlowRotaryPosEmbed

    model = ANYFLOW.build()
    model.rope = AnyFlowRotaryPosEmbed(TINY_ANYFLOW["attention_head_dim"], (1, 2, 2), 64, theta=10500.0)
    model.rope._build_freqs(torch.device("cpu"))  # cached per device
    model.rope.theta = 10000.0
    with pytest.raises(TypeError, match="does not return plain RoPE with theta=10000"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_mixed_time_batches_are_refused_above_the_base_grid_and_stock_below_it():
    """The complex tables carry no batch dimension: one plan per call."""
    model = ANYFLOW.build()
    t = torch.tensor([[1000.0] * 2, [400.0] * 2], dtype=torch.float64)
    above, below = anyflow_inputs((2, 6, 7), batch=2), anyflow_inputs((2, 3, 4), batch=2)
    for x in (above, below):
        x.update(timestep=t, r_timestep=0.5 * t)
    ref = ANYFLOW.run(model, below)
    with dype_rope.patch(model, base_grid=(3, 4)):
        assert torch.equal(ANYFLOW.run(model, below), ref)
        with pytest.raises(ValueError, match="share one diffusion time"):
            ANYFLOW.run(model, above)


def test_conditioning_frames_at_zero_leave_the_generated_frames_time():
    """AnyFlowPipeline's video conditioning sets the timestep of its latent prefix to 0: the scale's time is the
    generated frames' (the largest), checked with Dy-PI (every angle omega / s ** t)."""
    model = ANYFLOW.build()
    x = anyflow_inputs((2, 6, 7))
    x.update(timestep=torch.tensor([[0.0, 375.0]], dtype=torch.float64), r_timestep=torch.zeros(1, 2))
    with dype_rope.patch(model, base_grid=(3, 4), method="pi", lambda_s=1.0, lambda_t=1.0):
        got = tables(model, x)
    want = rope_pairs(video_positions(2, 6, 7), (6, 6, 6), 10000.0, (1.0, 2.0, 7 / 4), 0.375, (1.0, 3.0, 4.0),
                      method="pi", lambdas=(1.0, 1.0))
    torch.testing.assert_close(got[0], torch.stack(want, -1), rtol=0, atol=1e-12)


def test_enable_keeps_the_flow_map_schedule():
    """FlowMapEulerDiscreteScheduler applies a fixed shift (no mu): enable() patches the transformer only."""
    import diffusers

    def schedule(scheduler):
        scheduler.set_timesteps(6)
        return scheduler.timesteps.clone(), scheduler.sigmas.clone()

    cls = diffusers.AnyFlowPipeline
    parts = {n: None for n in inspect.signature(cls.__init__).parameters if n != "self"}
    parts.update(transformer=ANYFLOW.build(), scheduler=diffusers.FlowMapEulerDiscreteScheduler(**FLOW_MAP))
    pipe = cls(**parts)
    want = schedule(diffusers.FlowMapEulerDiscreteScheduler(**FLOW_MAP))
    handle = dype_rope.enable(pipe, 960, 1664)
    assert handle.mu is None and handle.transformer.adapter.name == "anyflow"
    assert handle.transformer.base_grid == (30, 52)
    assert all(torch.equal(g, w) for g, w in zip(schedule(pipe.scheduler), want))
    handle.remove()
    assert not dype_rope.is_patched(pipe.transformer) and "set_timesteps" not in vars(pipe.scheduler)


def test_minimax_h3_is_refused_because_its_positions_span_a_fixed_area():
    """The reason is checked against its pipeline's own grid: at 2x the rows and columns a square canvas still
    spans [0, 32) on both axes, only twice as densely."""
    from diffusers.modular_pipelines.minimax_h3.before_denoise import _frame_position_grid

    small, _ = _frame_position_grid(32, 32, 2, 2)
    large, _ = _frame_position_grid(64, 64, 2, 2)
    assert small.min() == large.min() == 0 and small.max() < 32 and large.max() < 32 and len(large) == 4 * len(small)
    model = tiny("MiniMaxH3Transformer3DModel", dict(
        num_attention_heads=2, attention_head_dim=16, hidden_size=32, num_layers=1, num_refiner_layers=1, ffn_dim=32,
        in_channels=4, audio_in_channels=4, text_dim=16, freq_dim=16, time_embed_hidden_dim=16, time_embed_dim=16,
        rope_freq_dim=2,
    ))
    with pytest.raises(Exception, match="aspect-normalised grid of fixed area"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)
