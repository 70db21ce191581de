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
from dype_rope.rope_formats import rotation_matrices  # noqa: E402
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
