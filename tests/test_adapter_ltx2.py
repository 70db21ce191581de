"""What only LTX-2 has (the contract rows are in tests/families/ltx2.py): one plan per sample, per-token timesteps,
keyframe and reference tokens appended to the video's coordinates (LTX2ConditionPipeline, LTX2InContextPipeline),
the audio and audio-video cross-attention RoPEs left stock, the install probe, and enable() on its pipelines."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import dype_rope
from families.ltx import LTX_SCHEDULER
from families.ltx2 import FPS, LTX2, LTX2_SPLIT, stock_rope, tiny_ltx2
from families.row import encoding_calls

ROWS = pytest.mark.parametrize("row", (LTX2, LTX2_SPLIT), ids=lambda r: r.name)
OTHER_ROPES = ("audio_rope", "cross_attn_rope", "cross_attn_audio_rope")


def tables(model, row, x, name="rope"):
    (_, out), = encoding_calls(model, name, lambda: row.run(model, x))
    return out


def tokens(out, start, stop):
    """The (cos, sin) of tokens start .. stop of either layout (the token axis is -2)."""
    return tuple(x[..., start:stop, :] for x in out)


@ROWS
def test_a_batch_of_two_times_gets_one_plan_per_sample(row):
    """Timesteps 1000 and 375 in one batch: each sample's tables are, bit for bit, those of that sample alone."""
    model = row.build()
    x = row.inputs(row.above, 1.0, batch=2)
    x["timestep"] = torch.tensor([1000.0, 375.0])
    with dype_rope.patch(model, base_grid=row.base):
        both = tables(model, row, x)
        alone = [tables(model, row, row.inputs(row.above, t)) for t in (1.0, 0.375)]
    for b in range(2):
        for got, want in zip(both, alone[b]):
            assert torch.equal(got[b : b + 1], want)
    assert (both[0][0] - both[0][1]).abs().max() > 1e-3  # not one plan for both


@ROWS
def test_per_token_timesteps_take_the_generated_tokens_time(row):
    """LTX2ImageToVideoPipeline: timestep [B, S] = t * (1 - conditioning_mask), the first frame's tokens at 0."""
    model = row.build()
    frames, rows, cols = row.above
    x = row.inputs(row.above, 0.375)
    mask = torch.zeros(1, frames * rows * cols)
    mask[:, : rows * cols] = 1.0  # the first latent frame is the conditioning image
    # the pipeline passes the audio its own [B] timestep beside the video's per-token one
    per_token = {**x, "timestep": 375.0 * (1 - mask), "audio_timestep": torch.tensor([375.0])}
    with dype_rope.patch(model, base_grid=row.base):
        want, got = tables(model, row, x), tables(model, row, per_token)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def appended_coords(grid):
    """A keyframe as LTX2ConditionPipeline appends one (one latent frame at the video's size, its pixel frame 9,
    no causal fix, seconds at the frame rate) and an IC-LoRA reference as LTX2InContextPipeline appends one (the
    whole video at half size, its rows and columns scaled back by reference_downscale_factor = 2)."""
    frames, rows, cols = grid
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32),
                          indexing="ij")
    start = torch.stack([torch.zeros(rows * cols), 32 * r.reshape(-1), 32 * c.reshape(-1)])
    keyframe = torch.stack([start, start + torch.tensor([1.0, 32, 32]).unsqueeze(-1)], -1).unsqueeze(0)
    keyframe[:, 0] = (keyframe[:, 0] + 9) / FPS
    reference = stock_rope().prepare_video_coords(1, frames, rows // 2, cols // 2, torch.device("cpu"), fps=FPS)
    reference[:, 1:] = reference[:, 1:] * 2
    return torch.cat([keyframe, reference], dim=2)


@ROWS
def test_appended_keyframe_and_reference_tokens_keep_the_video_tokens_tables(row):
    """The appended tokens (clean, timestep 0) neither set the scale nor the time: the video's tokens get the
    tables they get without them, bit for bit, and DyPE is active on them."""
    model = row.build()
    frames, rows, cols = grid = row.above
    video = frames * rows * cols
    x = row.inputs(grid, 0.6)
    extra = appended_coords(grid)
    n_extra = extra.shape[2]
    with_extra = dict(x)
    with_extra["video_coords"] = torch.cat([x["video_coords"], extra], dim=2)
    with_extra["hidden_states"] = torch.cat([x["hidden_states"], torch.randn(1, n_extra, 4)], dim=1)
    with_extra["timestep"] = torch.cat([torch.full((1, video), 600.0), torch.zeros(1, n_extra)], dim=1)
    with_extra["audio_timestep"] = torch.tensor([600.0])
    stock = tables(model, row, x)
    with dype_rope.patch(model, base_grid=row.base):
        alone, both = tables(model, row, x), tables(model, row, with_extra)
    assert all(torch.equal(b, a) for b, a in zip(tokens(both, 0, video), alone))
    assert (alone[0] - stock[0]).abs().max() > 1e-3


@ROWS
def test_the_audio_and_cross_modal_ropes_stay_stock(row):
    """Audio RoPE and the two cross-attention RoPEs (time only) are the stock modules with the stock numbers."""
    model = row.build()
    before = {name: getattr(model, name) for name in OTHER_ROPES}
    x = row.inputs(row.above, 1.0)
    stock = {name: tables(model, row, x, name) for name in OTHER_ROPES}
    with dype_rope.patch(model, base_grid=row.base):
        assert all(getattr(model, name) is module for name, module in before.items())
        patched = {name: tables(model, row, x, name) for name in OTHER_ROPES}
        video = tables(model, row, x)
    for name in OTHER_ROPES:
        assert all(torch.equal(p, s) for p, s in zip(patched[name], stock[name])), name
    assert (video[0] - tables(model, row, x)[0]).abs().max() > 1e-3  # DyPE was on


def test_a_module_of_another_layout_or_theta_is_refused():
    """The probe: pairs laid out by axis blocks, or a theta 5% off the one the module declares, are refused."""
    from diffusers.models.transformers.transformer_ltx2 import LTX2AudioVideoRotaryPosEmbed

    class Blocked(LTX2AudioVideoRotaryPosEmbed):
        def forward(self, coords, device=None):
            cos, sin = super().forward(coords, device)
            pad = self.dim % 6
            body = lambda x: x[..., pad:].unflatten(-1, (-1, 3, 2)).transpose(-3, -2).flatten(-3)
            return torch.cat([cos[..., :pad], body(cos)], -1), torch.cat([sin[..., :pad], body(sin)], -1)

    model = tiny_ltx2()
    model.rope = Blocked(dim=model.rope.dim, num_attention_heads=model.rope.num_attention_heads)
    with pytest.raises(TypeError, match="does not describe the module"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)
    class OffTheta(LTX2AudioVideoRotaryPosEmbed):
        def forward(self, coords, device=None):  # its tables turn at 1.05 times the theta it declares
            declared, self.theta = self.theta, self.theta * 1.05
            try:
                return super().forward(coords, device)
            finally:
                self.theta = declared

    model = tiny_ltx2()
    model.rope = OffTheta(dim=model.rope.dim, num_attention_heads=model.rope.num_attention_heads)
    with pytest.raises(TypeError, match="does not describe the module"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def _pipeline(cls_name, **components):
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    none = dict(vae=None, audio_vae=None, text_encoder=None, tokenizer=None, connectors=None, vocoder=None)
    stock = dict(scheduler=FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER), transformer=tiny_ltx2())
    return getattr(diffusers, cls_name)(**{**none, **stock, **components})


def _set_schedule(scheduler, mu):
    """Step 5 of the LTX-2 pipelines: the schedule of 3 steps with the mu the pipeline computed."""
    from diffusers.pipelines.ltx2.pipeline_ltx2 import retrieve_timesteps

    return retrieve_timesteps(scheduler, 3, "cpu", None, sigmas=np.linspace(1.0, 1 / 3, 3), mu=mu)[0]


def test_enable_on_ltx2_pipeline_pins_the_shift_of_the_video_and_of_the_audio_copy():
    """LTX2Pipeline: tokens of 32 px, the shift pinned at max_shift, "linear" refused (its line counts frames);
    the scheduler copy it makes for the audio latents (copy.deepcopy) follows the pin and sets its own schedule."""
    pipe = _pipeline("LTX2Pipeline")
    with pytest.raises(ValueError, match="counts the video's frames"):
        dype_rope.enable(pipe, 192, 224, shift="linear", base_grid=(3, 4))
    handle = dype_rope.enable(pipe, 192, 224, base_grid=(3, 4))
    assert handle.mu == LTX_SCHEDULER["max_shift"] and handle.image_seq_len == 6 * 7
    assert dype_rope.is_patched(pipe.transformer)
    audio = copy.deepcopy(pipe.scheduler)
    audio_steps = _set_schedule(audio, mu=5.0)
    video_steps = _set_schedule(pipe.scheduler, mu=5.0)
    want = _set_schedule(copy.deepcopy(_pipeline("LTX2Pipeline").scheduler), mu=LTX_SCHEDULER["max_shift"])
    assert torch.equal(video_steps, want) and torch.equal(audio_steps, want)
    assert torch.equal(audio.timesteps, want) and torch.equal(audio.sigmas, pipe.scheduler.sigmas)
    handle.remove()
    assert not dype_rope.is_patched(pipe.transformer) and "set_timesteps" not in vars(pipe.scheduler)
    assert not torch.equal(_set_schedule(pipe.scheduler, mu=5.0), want)


def test_enable_pins_a_condition_pipelines_own_audio_scheduler():
    """LTX2ConditionPipeline may carry its own audio_scheduler; the pipeline gives it the video's mu, so does
    enable(); remove() restores both."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    audio = FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER)
    pipe = _pipeline("LTX2ConditionPipeline", audio_scheduler=audio)
    want = _set_schedule(FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER), mu=LTX_SCHEDULER["max_shift"])
    with dype_rope.enable(pipe, 192, 224, base_grid=(3, 4)):
        assert torch.equal(_set_schedule(audio, mu=5.0), want)
        assert torch.equal(_set_schedule(pipe.scheduler, mu=5.0), want)
    assert "set_timesteps" not in vars(audio) and "set_timesteps" not in vars(pipe.scheduler)


def test_enable_leaves_the_dfr_pipelines_distilled_sigmas_alone():
    from diffusers import FlowMatchEulerDiscreteScheduler

    import diffusers

    scheduler = FlowMatchEulerDiscreteScheduler()
    pipe = diffusers.LTX2DFRPipeline(scheduler=scheduler, vae=None, audio_vae=None, text_encoder=None,
                                     tokenizer=None, connectors=None, transformer=tiny_ltx2(), vocoder=None)
    with dype_rope.enable(pipe, 192, 224, base_grid=(3, 4)) as handle:
        assert handle.mu is None and dype_rope.is_patched(pipe.transformer)
        assert "set_timesteps" not in vars(scheduler)


class _Stop(Exception):
    pass


def test_ltx2_pipeline_samples_with_dype_and_comes_back_stock():
    """LTX2Pipeline end to end (tiny connectors and transformer, no VAE: the latents are read after the last step):
    above the base grid enable() changes the video latents, remove() gives the stock ones back bit for bit."""
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    torch.manual_seed(0)
    connectors = LTX2TextConnectors(
        caption_channels=8, text_proj_in_factor=2, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=4, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=4, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None,
    ).eval()
    # the pipeline's audio latents without an audio VAE: 8 channels x 64 / 4 mel bins = 128 features
    transformer = tiny_ltx2(audio_in_channels=128, audio_out_channels=128)
    pipe = _pipeline("LTX2Pipeline", connectors=connectors, transformer=transformer)
    emb = torch.randn(1, 3, 8, 2, generator=torch.Generator().manual_seed(0))  # [B, S, caption, layers]

    def run():
        seen = {}

        def last(pipe, i, t, kwargs):
            if i == 1:
                seen.update(kwargs)
                raise _Stop  # the step is done; what follows decodes with the VAE
            return {}

        with pytest.raises(_Stop):
            pipe(prompt_embeds=emb, prompt_attention_mask=torch.ones(1, 3), height=192, width=224, num_frames=9,
                 num_inference_steps=2, guidance_scale=1.0, audio_guidance_scale=1.0, output_type="latent",
                 generator=torch.Generator().manual_seed(3), callback_on_step_end=last,
                 callback_on_step_end_tensor_inputs=["latents"])
        return seen["latents"]

    stock = run()
    assert stock.shape[1] == 2 * 6 * 7  # 9 frames -> 2 latent frames; 192 x 224 px -> 6 x 7 tokens
    original = transformer.rope
    handle = dype_rope.enable(pipe, 192, 224, base_grid=(3, 4))
    patched = run()
    assert transformer.rope is not original and dype_rope.is_patched(transformer)
    assert (patched - stock).abs().max() > 1e-3
    handle.remove()
    assert torch.equal(run(), stock)
