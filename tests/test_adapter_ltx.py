"""What only LTX-Video has (the contract rows are in tests/families/ltx.py): tables with a batch dimension (one
plan per sample), per-token timesteps (LTXImageToVideoPipeline, LTXConditionPipeline), pixel video_coords
(LTXConditionPipeline) instead of the grid arguments, and the install probe."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.ltx import LTX_VIDEO as ROW
from families.row import encoding_calls


def tables(model, x):
    return encoding_calls(model, "rope", lambda: ROW.run(model, x))


def pairs_of(calls, batch):
    """[B, S, dim / 2, 2] of the one call."""
    (_, out), = calls
    cos, sin = out
    assert cos.shape[0] == batch
    return torch.stack([cos[..., 0::2], sin[..., 0::2]], -1).double()


@pytest.fixture(scope="module")
def model():
    return ROW.build()


def test_a_batch_of_two_times_gets_one_plan_per_sample(model):
    """CFG-free batch at timesteps 1000 and 375: each sample's tables are the reference at its own time."""
    x = ROW.make_inputs(ROW.above, batch=2)
    x["timestep"] = torch.tensor([1000.0, 375.0])
    with dype_rope.patch(model, base_grid=ROW.base):
        calls = tables(model, x)
    got = pairs_of(calls, 2)
    for b, t in enumerate((1.0, 0.375)):
        args = (calls[0][0][0][b : b + 1], *calls[0][0][1:])
        want = ROW.layout.expected([(args, None)], ROW.above, ROW.base, t, "per-axis", None, method="yarn")[0]
        torch.testing.assert_close(got[b], want, rtol=0, atol=ROW.layout.tol)
    assert (got[0] - got[1]).abs().max() > 1e-3  # not one plan for both


def test_per_token_timesteps_take_the_generated_tokens_time(model):
    """LTXImageToVideoPipeline: timestep [B, S] = t * (1 - conditioning_mask), the first frame's tokens at 0."""
    frames, rows, cols = ROW.above
    x = ROW.make_inputs(ROW.above)
    mask = torch.zeros(1, frames * rows * cols)
    mask[:, : rows * cols] = 1.0  # the first latent frame is the conditioning image
    x["timestep"] = 375.0 * (1 - mask)
    with dype_rope.patch(model, base_grid=ROW.base):
        calls = tables(model, x)
    want = ROW.layout.expected(calls, ROW.above, ROW.base, 0.375, "per-axis", None, method="yarn")
    torch.testing.assert_close(ROW.layout.seen(calls)[0], want[0], rtol=0, atol=ROW.layout.tol)


def test_pixel_video_coords_give_the_grid_arguments_tables(model):
    """LTXConditionPipeline passes pixel coordinates (its own _prepare_video_ids / _scale_video_ids) and no
    grid: the spatial pairs, and the scale they imply, must be those of the same grid passed as arguments."""
    from diffusers import LTXConditionPipeline

    frames, rows, cols = ROW.above
    ids = LTXConditionPipeline._prepare_video_ids(1, frames, rows, cols)
    coords = LTXConditionPipeline._scale_video_ids(ids, scale_factor=32, scale_factor_t=8).float()
    coords[:, 0] = coords[:, 0] / 25  # the pipeline's 1 / frame_rate
    grid_x = ROW.inputs(ROW.above, 0.6)
    coords_x = {k: v for k, v in grid_x.items() if k not in ("num_frames", "height", "width", "rope_interpolation_scale")}
    coords_x["video_coords"] = coords
    stock = pairs_of(tables(model, coords_x), 1)
    with dype_rope.patch(model, base_grid=ROW.base):
        by_grid, by_coords = pairs_of(tables(model, grid_x), 1), pairs_of(tables(model, coords_x), 1)
    n, pad = ROW.layout.dim // 6, ROW.layout.dim % 6
    spatial = [pad // 2 + 3 * k + a for k in range(n) for a in (1, 2)]
    torch.testing.assert_close(by_coords[..., spatial, :], by_grid[..., spatial, :], rtol=0, atol=1e-6)
    assert (by_coords - stock).abs().max() > 1e-3  # DyPE active on this path too


def test_a_module_of_another_layout_is_refused():
    """The probe: a module that lays its pairs out differently (here: axes in blocks) must not be patched."""
    from diffusers.models.transformers.transformer_ltx import LTXVideoRotaryPosEmbed

    class Blocked(LTXVideoRotaryPosEmbed):
        def forward(self, *args):
            cos, sin = super().forward(*args)
            pad = self.dim % 6
            body = lambda x: x[..., pad:].unflatten(-1, (-1, 3, 2)).transpose(-3, -2).flatten(-3)
            return torch.cat([cos[..., :pad], body(cos)], -1), torch.cat([sin[..., :pad], body(sin)], -1)

    model = ROW.build()
    model.rope = Blocked(dim=ROW.layout.dim)
    with pytest.raises(TypeError, match="does not describe the module"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_enable_on_the_ltx_pipeline_pins_its_shift_and_counts_its_32_px_tokens():
    """LTXPipeline: tokens of 32 px (VAE 32, patch 1, its _pack_latents packing by the patch size), the shift
    pinned at the scheduler's max_shift; "linear" is refused (the pipeline's line counts frames too)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline

    from families.ltx import LTX_SCHEDULER, tiny_ltx
    from families.row import flow_match

    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER), vae=None, text_encoder=None,
                       tokenizer=None, transformer=tiny_ltx())
    emb = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(0))

    def run(height, width):
        g = torch.Generator().manual_seed(3)
        return pipe(prompt_embeds=emb, prompt_attention_mask=torch.ones(1, 3), height=height, width=width,
                    num_frames=9, num_inference_steps=2, output_type="latent", guidance_scale=1.0, generator=g).frames

    above = run(192, 224)  # 6 x 7 tokens
    with pytest.raises(ValueError, match="counts the video's frames"):
        dype_rope.enable(pipe, 192, 224, shift="linear", base_grid=(3, 4))
    handle = dype_rope.enable(pipe, 192, 224, base_grid=(3, 4))
    assert handle.mu == LTX_SCHEDULER["max_shift"] and handle.image_seq_len == 6 * 7
    patched = run(192, 224)
    pinned, _ = flow_match(LTX_SCHEDULER, image_seq_len=0, steps=2, mu=LTX_SCHEDULER["max_shift"])
    torch.testing.assert_close(pipe.scheduler.timesteps, pinned)
    assert not torch.allclose(patched, above, atol=1e-4)
    handle.remove()
    assert not dype_rope.is_patched(pipe.transformer) and torch.equal(run(192, 224), above)

