"""Ideogram 4's own checks, beyond the contract rows (tests/families/ideogram4.py): enable() on Ideogram4Pipeline
(two transformers, the pipeline's own shift), one plan per sample, captions that never set the scale, the probe."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import dype_rope
from dype_rope import coverage
from families.ideogram4 import IDEOGRAM4, TINY_IDEOGRAM4, halves, tiny_ideogram4


def image_tables(model, x):
    """The rows of the tables the model hands its blocks, [B, L, D/2, 2]."""
    seen = []
    hook = model.rotary_emb.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        out = model(**x)[0]
    hook.remove()
    (cos, sin), = seen
    return out, halves(cos, sin).reshape(*cos.shape[:2], -1, 2)


def test_enable_patches_both_transformers_and_keeps_the_pipelines_own_schedule():
    from diffusers import FlowMatchEulerDiscreteScheduler, Ideogram4Pipeline

    names = [n for n in inspect.signature(Ideogram4Pipeline.__init__).parameters if n != "self"]
    parts = {n: None for n in names}
    parts.update(
        transformer=tiny_ideogram4(), unconditional_transformer=tiny_ideogram4(seed=1),
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipe = Ideogram4Pipeline(**parts)
    sigmas = [1.0, 0.6, 0.3]
    want = FlowMatchEulerDiscreteScheduler()
    want.set_timesteps(sigmas=sigmas)
    handle = dype_rope.enable(pipe, 960, 1664)
    assert handle.mu is None and handle.image_seq_len == 60 * 104  # 16 px per token
    assert handle.transformer.base_grid == (128, 128) and handle.transformer.adapter.name == "ideogram4"
    assert dype_rope.is_patched(pipe.transformer) and dype_rope.is_patched(pipe.unconditional_transformer)
    pipe.scheduler.set_timesteps(sigmas=sigmas)  # as the pipeline calls it: explicit sigmas, no mu
    assert torch.equal(pipe.scheduler.sigmas, want.sigmas) and "set_timesteps" not in vars(pipe.scheduler)
    handle.remove()
    assert not dype_rope.is_patched(pipe.transformer) and not dype_rope.is_patched(pipe.unconditional_transformer)


def test_a_mixed_time_batch_gets_one_plan_per_sample():
    """Each sample's tables are bit for bit those of the sample run alone; its output matches it."""
    model = tiny_ideogram4()
    x = IDEOGRAM4.inputs((5, 7), 0.5, batch=2)
    x["timestep"] = torch.tensor([0.1, 0.6])  # model time: 0.9 and 0.4 from noise
    with dype_rope.patch(model, base_grid=(3, 4)):
        out, tables = image_tables(model, x)
        for b in range(2):
            alone = {k: (v[b : b + 1] if torch.is_tensor(v) else v) for k, v in x.items()}
            out_b, tables_b = image_tables(model, alone)
            assert torch.equal(tables[b], tables_b[0])
            torch.testing.assert_close(out[b], out_b[0], rtol=1e-5, atol=1e-5)
    assert not torch.equal(tables[0], tables[1])


def test_the_caption_never_sets_the_scale():
    """The conditional pass (a caption of 40 tokens at positions 0 .. 39 on every axis, before the image) gives the
    image's tokens the tables of the unconditional, image-only pass (Ideogram4Pipeline's neg_position_ids, the
    image slice of the same layout): only the generated image's tokens (indicator 2) set the scale."""
    from diffusers.pipelines.ideogram4.pipeline_ideogram4 import Ideogram4Pipeline

    model = tiny_ideogram4()
    rows, cols, text = 5, 7, 40
    pos, seg, ind = Ideogram4Pipeline._prepare_ids([text], rows, cols, text, "cpu")
    c = TINY_IDEOGRAM4

    def inputs(sl):
        n = pos[:, sl].shape[1]
        return dict(
            hidden_states=torch.randn(1, n, c["in_channels"]), timestep=torch.tensor([0.3]),
            encoder_hidden_states=torch.randn(1, n, c["llm_features_dim"]), position_ids=pos[:, sl],
            segment_ids=seg[:, sl], indicator=ind[:, sl], return_dict=False,
        )

    with dype_rope.patch(model, base_grid=(3, 4)):
        conditional = image_tables(model, inputs(slice(None)))[1][0, text:]
        unconditional = image_tables(model, inputs(slice(text, None)))[1][0]
    assert torch.equal(conditional, unconditional)


def test_a_module_whose_base_is_not_the_configs_is_refused():
    """A rotary module 5% off the base its row reads (config.rope_theta) must not be patched with the wrong one."""
    model = tiny_ideogram4()
    d = TINY_IDEOGRAM4["attention_head_dim"]
    off = 1.0 / (5_000_000 * 1.05) ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    model.rotary_emb.inv_freq.copy_(off)
    with pytest.raises(TypeError, match="does not describe the module"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_the_coverage_report_lists_ideogram4_with_its_row():
    entry = {e["class"]: e for e in coverage.diffusers_coverage()}[
        "diffusers.models.transformers.transformer_ideogram4.Ideogram4Transformer2DModel"
    ]
    assert entry["status"] == "supported" and "row 'ideogram4'" in entry["detail"]


def test_the_standard_form_of_the_sections_is_the_modules_frequencies():
    """Hand-derived: pair 3m + a turns at base^(-2(3m + a)/D) = c_a theta_a^(-2m / 2n)."""
    from dype_rope.adapters.mechanisms.mrope import standard_form

    base, d, n = 5e6, 256, 20
    for a in (1, 2):
        theta_a, c_a = standard_form(base, d, n, a)
        for m in range(n):
            assert math.isclose(c_a * theta_a ** (-2 * m / (2 * n)), base ** (-2 * (3 * m + a) / d), rel_tol=1e-12)
