"""What the Cosmos 3 Omni row (adapters/families/by_cosmos3.py, adapters/mechanisms/mrope.py) does beyond the
contract every row keeps (tests/test_contract.py): the prompt's length never sets the scale, the video's row and
column pairs take the schedule whatever the text before them, configurations the row does not describe are refused,
and Cosmos3OmniPipeline keeps its schedule under enable()."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families import cosmos3
from families.cosmos3 import COSMOS3, HALF, SECTIONS, TINY_COSMOS3, pairs
from families.row import encoding_calls
from families.tiny import tiny

ROWS_COLS = [3 * k + a for a in (1, 2) for k in range(SECTIONS[a])]  # the pairs DyPE may move


def video_tables(text: int, grid=(2, 6, 7), t=0.375):
    """The pairs of the video tokens, from a call whose prompt has `text` tokens."""
    model = COSMOS3.build()
    original = cosmos3.TEXT
    cosmos3.TEXT = text
    try:
        x = COSMOS3.inputs(grid, t)
        with dype_rope.patch(model, base_grid=COSMOS3.base):
            calls = encoding_calls(model, COSMOS3.encoding, lambda: COSMOS3.run(model, x))
    finally:
        cosmos3.TEXT = original
    return pairs(calls[0][1])[text:]


def test_the_prompts_length_never_sets_the_scale():
    """40 text tokens reach positions beyond the 6 x 7 video on every axis: the video's rows and columns still take
    the 6 x 7 grid's scale (their positions restart at 0), so their tables are the 5-token prompt's."""
    short, long = video_tables(5), video_tables(40)
    torch.testing.assert_close(long[:, ROWS_COLS], short[:, ROWS_COLS], rtol=0, atol=0)


def test_text_tokens_turn_by_the_same_frequencies_as_the_video():
    """A text token sits at its index on the row and column axes too: its row / column pairs turn by the video's
    DyPE frequencies (one frequency per pair for every token), not by stock ones."""
    model = COSMOS3.build()
    x = COSMOS3.inputs((2, 6, 7), 1.0)
    with dype_rope.patch(model, base_grid=COSMOS3.base, method="pi", lambda_s=1.0, lambda_t=1.0):
        calls = encoding_calls(model, COSMOS3.encoding, lambda: COSMOS3.run(model, x))
    got = pairs(calls[0][1])
    dim = 2 * HALF
    for a, scale in ((1, 6 / 3), (2, 7 / 4)):  # Dy-PI, kappa = t = 1: every angle is p omega / s
        j = 3 * torch.arange(SECTIONS[a]) + a
        omega = cosmos3.THETA ** (-2 * j.double() / dim)
        angle = torch.arange(cosmos3.TEXT).double().unsqueeze(-1) * omega / scale  # text token i at i
        torch.testing.assert_close(got[: cosmos3.TEXT, j, 0], angle.cos(), rtol=0, atol=2e-7)
        torch.testing.assert_close(got[: cosmos3.TEXT, j, 1], angle.sin(), rtol=0, atol=2e-7)


def test_configurations_the_row_does_not_describe_are_refused():
    from diffusers.models.transformers.transformer_cosmos3 import Cosmos3VLTextRotaryEmbedding

    with pytest.raises(TypeError, match="timestep_scale = 0.01"):
        dype_rope.patch(tiny("Cosmos3OmniTransformer", TINY_COSMOS3, timestep_scale=0.01))
    with pytest.raises(TypeError, match=r"mrope sections \[4, 4, 2\]"):
        dype_rope.patch(tiny("Cosmos3OmniTransformer", TINY_COSMOS3, rope_axes_dim=(4, 4, 2)))
    model = COSMOS3.build()
    model.rotary_emb = Cosmos3VLTextRotaryEmbedding(2 * HALF, 10000.0, SECTIONS)  # config says 5e6
    with pytest.raises(TypeError, match="does not return \\(cos, sin\\) \\[B, N, D\\] of interleaved MRoPE"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_enable_keeps_the_cosmos3_omni_pipelines_schedule():
    """Cosmos3OmniPipeline sets UniPC's flow sigmas without a resolution shift. (Its constructor needs a tokenizer
    and a VAE, which enable() never touches: the pipeline is assembled from its parts.)"""
    import diffusers

    def unipc():
        return diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
        )

    cls = diffusers.Cosmos3OmniPipeline
    pipe = cls.__new__(cls)
    diffusers.DiffusionPipeline.__init__(pipe)
    pipe.register_modules(transformer=COSMOS3.build(), scheduler=unipc())
    want = unipc()
    want.set_timesteps(12)
    with dype_rope.enable(pipe, 1440, 2560) as handle:
        assert handle.mu is None and handle.image_seq_len == 45 * 80
        assert handle.transformer.adapter.name == "cosmos3_omni"
        pipe.scheduler.set_timesteps(12)
        assert torch.equal(pipe.scheduler.timesteps, want.timesteps)
    assert not dype_rope.is_patched(pipe.transformer)
