"""mflux's FLUX transformer (MLX) under dype_rope.patch: bit for bit at or below the base grid, DyPE's tables from
mflux's own sigmas above it (equal to the core's and to the float64 reference of tests/reference_dype.py), and a
patch that comes off completely.

The transformers are mflux's own class with random weights at FLUX's width: one with 1 + 1 blocks for the
model-output test (two forwards), one with no blocks for the rest (the rotary tables are computed by the same
call path; blocks only consume them).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from array_backends import require
from reference_dype import rope_pairs

mx = require("mlx.core")
require("mflux")

import dype_rope  # noqa: E402
from dype_rope import DyPEConfig, build_plan  # noqa: E402
from dype_rope.rope_formats import rope_angles, rotation_matrices  # noqa: E402
from mflux.models.common.config.config import Config  # noqa: E402
from mflux.models.common.config.model_config import ModelConfig  # noqa: E402
from mflux.models.flux.model.flux_transformer.transformer import Transformer  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

AXES, THETA = (16, 56, 56), 10000.0


def build(blocks: int):
    model = Transformer(ModelConfig.dev(), num_transformer_blocks=blocks, num_single_transformer_blocks=blocks)
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="module")
def tiny():
    return build(0)


def inputs(height: int, width: int, text: int = 4):
    key = mx.random.key(height * 1000 + width)
    k1, k2, k3 = mx.random.split(key, 3)
    tokens = (height // 16) * (width // 16)
    return dict(hidden_states=mx.random.normal((1, tokens, 64), key=k1),
                prompt_embeds=mx.random.normal((1, text, 4096), key=k2),
                pooled_prompt_embeds=mx.random.normal((1, 768), key=k3))


def config(height: int, width: int, steps: int = 4):
    return Config(ModelConfig.dev(), num_inference_steps=steps, height=height, width=width)


@pytest.fixture
def rotary(monkeypatch):
    """The rotary tables each model call hands its blocks, recorded where mflux computes them."""
    seen = []
    stock = Transformer.compute_rotary_embeddings

    def recording(*args, **kwargs):
        seen.append(stock(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(Transformer, "compute_rotary_embeddings", staticmethod(recording))
    return seen


def ids_of(height: int, width: int, text: int = 4):
    return mx.concatenate([Transformer._prepare_text_ids(text), Transformer._prepare_latent_image_ids(height, width)],
                          axis=1)


def test_model_is_bit_for_bit_at_the_base_grid():
    model = build(1)
    cfg, x = config(128, 128), inputs(128, 128)
    stock = model(t=1, config=cfg, **x)
    with dype_rope.patch(model, base_grid=(8, 8)):  # the image is exactly the base grid
        patched = model(t=1, config=cfg, **x)
    mx.eval(stock, patched)
    assert np.array_equal(np.array(stock), np.array(patched))


@pytest.mark.parametrize("aspect", ["per-axis", "isotropic"])
def test_tables_above_the_base_grid_follow_mfluxs_sigmas(tiny, rotary, aspect):
    height, width, steps = 128, 192, 4  # 8 x 12 tokens on a 4 x 4 base grid: ratios 2 and 3
    cfg, x = config(height, width, steps), inputs(height, width)
    ratios = (1.0, 2.0, 3.0) if aspect == "per-axis" else (1.0, 3.0, 3.0)
    sigmas = np.array(cfg.scheduler.sigmas).astype(np.float64)
    ids = ids_of(height, width)
    stock = tiny.pos_embed(ids)
    with dype_rope.patch(tiny, base_grid=(4, 4), aspect=aspect):
        for t in range(steps):
            tiny(t=t, config=cfg, **x)
    assert len(rotary) == steps
    half = AXES[0] // 2
    for t, table in enumerate(rotary):
        table = np.array(table)
        # pairs of the frame axis (never stretched) keep mflux's own numbers
        assert np.array_equal(table[..., :half, :, :], np.array(stock)[..., :half, :, :])
        # the stretched pairs: the core's matrices for mflux's sigma of this step, exactly ...
        plan = build_plan(AXES, THETA, mx.array(ratios), cfg.scheduler.sigmas[t], DyPEConfig(), (1.0, 4.0, 4.0))
        core = np.array(rotation_matrices(ids, plan))[:, None]
        assert np.array_equal(table[..., half:, :, :], core[..., half:, :, :])
        # ... and the paper's formulas in float64, within float32 rounding
        cos, sin = rope_pairs(np.array(ids[0]), AXES, THETA, ratios, sigmas[t], (1.0, 4.0, 4.0))
        ref = np.stack([cos, -sin, sin, cos], axis=-1).reshape(*cos.shape, 2, 2)
        np.testing.assert_allclose(table[0, 0, :, half:], ref[:, half:], rtol=0, atol=3e-5)
    first, last = np.array(rotary[0]), np.array(rotary[-1])
    assert not np.allclose(first[..., half:, :, :], last[..., half:, :, :])  # the time reaches the tables


def test_patch_comes_off_completely(tiny):
    stock_cls, stock_embed = type(tiny), tiny.pos_embed
    keys = [k for k, _ in tree_flatten(tiny.parameters())]
    handle = dype_rope.patch(tiny, base_grid=(4, 4))
    assert dype_rope.is_patched(tiny) and handle.active and handle.model is tiny
    assert isinstance(tiny, stock_cls) and [k for k, _ in tree_flatten(tiny.parameters())] == keys
    with pytest.raises(RuntimeError, match="already patched"):
        dype_rope.patch(tiny)
    with pytest.raises(RuntimeError, match="outside the model's forward"):
        tiny.pos_embed(ids_of(64, 64))
    dype_rope.unpatch(tiny)
    assert type(tiny) is stock_cls and tiny.pos_embed is stock_embed and not dype_rope.is_patched(tiny)
    assert not handle.active and handle.model is None
    handle.remove()  # again: nothing to do
    with pytest.raises(ValueError, match="not patched"):
        dype_rope.unpatch(tiny)


def test_refusals(tiny):
    with pytest.raises(ValueError, match="backend='triton' is not supported"):
        dype_rope.patch(tiny, backend="triton")
    assert type(tiny) is Transformer
    with pytest.raises(TypeError, match="takes a torch.nn.Module, got EmbedND"):
        dype_rope.patch(tiny.pos_embed)


def test_registering_the_adapter_imports_no_mlx():
    code = "import sys, dype_rope.adapters; print(sorted(m for m in ('mlx', 'mflux') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- FLUX.2 (Klein) -------------------------------------------------------------------------------------------

from mflux.models.flux2.model.flux2_transformer.transformer import Flux2Transformer  # noqa: E402

AXES2, THETA2 = (32, 32, 32, 32), 2000.0


@pytest.fixture(scope="module")
def klein():
    """mflux's Flux2Transformer with 1 + 1 blocks, two heads of 128 channels and narrow inputs, random weights."""
    model = Flux2Transformer(in_channels=16, num_layers=1, num_single_layers=1, num_attention_heads=2,
                             joint_attention_dim=32)
    mx.eval(model.parameters())
    return model


def flux2_call(rows: int, cols: int, text: int = 5):
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    zeros = np.zeros_like(r)
    img = np.stack([zeros, r, c, zeros], axis=-1).reshape(-1, 4).astype(np.float32)
    txt = np.stack([np.zeros(text)] * 3 + [np.arange(text)], axis=-1).astype(np.float32)
    key = mx.random.key(rows * 100 + cols)
    return dict(hidden_states=mx.random.normal((1, rows * cols, 16), key=key),
                encoder_hidden_states=mx.random.normal((1, text, 32), key=mx.random.split(key)[0]),
                img_ids=mx.array(img)[None], txt_ids=mx.array(txt)[None])


def test_flux2_is_bit_for_bit_at_the_base_grid_and_changes_above_it(klein):
    x = flux2_call(8, 12)
    stock = klein(timestep=0.7, **x)
    with dype_rope.patch(klein, base_grid=(8, 12)):
        same = klein(timestep=0.7, **x)
    with dype_rope.patch(klein, base_grid=(4, 4)):
        stretched = klein(timestep=0.7, **x)
    mx.eval(stock, same, stretched)
    assert type(klein) is Flux2Transformer
    assert np.array_equal(np.array(stock), np.array(same))
    assert not np.allclose(np.array(stock), np.array(stretched), rtol=0, atol=1e-6)


@pytest.mark.parametrize("timestep", [0.7, 700.0])  # mflux passes sigma or sigma * 1000; both mean t = 0.7
def test_flux2_tables_follow_the_timestep_and_the_image_ids(klein, monkeypatch, timestep):
    from dype_rope.adapters.mflux_embed import DyPEFlux2PosEmbed

    seen = []
    dype_call = DyPEFlux2PosEmbed.__call__
    monkeypatch.setattr(DyPEFlux2PosEmbed, "__call__", lambda self, ids: seen.append((ids, dype_call(self, ids))) or
                        seen[-1][1])
    x = flux2_call(8, 12)
    with dype_rope.patch(klein, base_grid=(4, 4)):
        klein(timestep=timestep, **x)
    assert [tuple(ids.shape) for ids, _ in seen] == [(96, 4), (5, 4)]  # the image's ids, then the text's
    ratios = (1.0, 2.0, 3.0, 1.0)
    plan = build_plan(AXES2, THETA2, mx.array(ratios), mx.array(0.7), DyPEConfig(), (1.0, 4.0, 4.0, 1.0))
    stretched = np.repeat([r > 1 for r in ratios], 16)
    for ids, (cos, sin) in seen:
        stock_cos, stock_sin = klein.pos_embed(ids)
        angles = np.array(rope_angles(ids, plan))
        m = np.array(plan.mscale)
        core_cos, core_sin = np.array(mx.cos(mx.array(angles))) * m, np.array(mx.sin(mx.array(angles))) * m
        assert np.array_equal(np.array(cos)[:, ~stretched], np.array(stock_cos)[:, ~stretched])
        assert np.array_equal(np.array(sin)[:, ~stretched], np.array(stock_sin)[:, ~stretched])
        assert np.array_equal(np.array(cos)[:, stretched], core_cos[:, stretched])
        assert np.array_equal(np.array(sin)[:, stretched], core_sin[:, stretched])
        ref_cos, ref_sin = rope_pairs(np.array(ids), AXES2, THETA2, ratios, 0.7, (1.0, 4.0, 4.0, 1.0))
        np.testing.assert_allclose(np.array(cos)[:, stretched], ref_cos.numpy()[:, stretched], rtol=0, atol=3e-5)
        np.testing.assert_allclose(np.array(sin)[:, stretched], ref_sin.numpy()[:, stretched], rtol=0, atol=3e-5)
