"""ComfyUI's Ideogram 4 through DyPE: a tiny random-weight model built by ComfyUI's own model code, sampled by
`comfy.sample.sample` through the DyPE node's function, against ComfyUI's code and a float64 reference.

The tables are read where ComfyUI's blocks use them: the `freqs_cis` argument of each block's attention.
The reference restates the interleaved layout from ComfyUI's `precompute_freqs_cis(..., interleaved_mrope=True)`
(pair j reads h where j % 3 == 1 and j < 3 n_h, w where j % 3 == 2 and j < 3 n_w, t elsewhere, at base^(-2j / D))
and takes each spatial axis as standard RoPE on 2 n_a channels with theta_a = base^(6 n_a / D) over positions
c_a p, c_a = base^(-2a / D), the paper's schedules from tests/reference_dype.py on that form.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dype_rope
import tiny_comfy
from dype_rope.adapters.comfyui import comfy_adapter_class
from reference_dype import frequencies

BASE = (8, 8)  # tokens; the node takes pixels: 16 px per token (one Flux2 latent pixel)
PPT = 16
HEAD, SECTIONS, THETA = 32, (6, 5, 5), 5.0e6  # 16 pairs: h on 1, 4, .., 13, w on 2, 5, .., 14, t on the rest
TINY = dict(num_attention_heads=2, attention_head_dim=HEAD, intermediate_size=64, adaln_dim=32,
            llm_features_dim=24, rope_theta=THETA, mrope_section=list(SECTIONS), norm_eps=1e-5)
TXT_LEN, STEPS = 5, 3
IMAGE_OFFSET = 65536  # comfy/ldm/ideogram4/model.py: IMAGE_POSITION_OFFSET


def make_model(seed: int = 0):
    import comfy.supported_models

    class TinyIdeogram4(comfy.supported_models.Ideogram4):
        unet_extra_config = TINY  # the released config's overrides, at tiny sizes

    config = TinyIdeogram4({"image_model": "ideogram4", "num_layers": 2, "in_channels": 128})
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.fixture
def patcher(comfy):
    import comfy.model_patcher

    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(make_model(), load_device=cpu, offload_device=cpu)


def conds(txt_len: int = TXT_LEN, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [[[torch.randn(1, txt_len, TINY["llm_features_dim"], generator=g), {}]] for _ in range(2)]


def dype(patcher, **settings):
    from dype_rope.adapters.comfyui.node import dype_model

    return dype_model(patcher, base_resolution=BASE[0] * PPT, **settings)


def sample(comfy, patcher, rows, cols, cfg=2.0, positive=None, negative=None):
    pos, neg = conds()
    lat = torch.zeros(1, 128, rows, cols)
    return tiny_comfy.sample(comfy, "ideogram4", patcher, positive or pos, negative or neg, lat, steps=STEPS, cfg=cfg)


def record(comfy, patcher, rows, cols, **kwargs):
    """Sample, recording every model call's sigma and the freqs_cis its first block's attention got."""
    model = patcher.model.diffusion_model
    calls = []
    hooks = [
        model.register_forward_pre_hook(
            lambda m, a, kw: calls.append({"sigma": kw["transformer_options"]["sigmas"].clone(), "tables": [],
                                            "batch": a[0].shape[0]}),
            with_kwargs=True),
        model.layers[0].attention.register_forward_pre_hook(lambda m, a: calls[-1]["tables"].append(a[2])),
    ]
    try:
        out = sample(comfy, patcher, rows, cols, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return out, calls


def positions(rows, cols, txt_len):
    """[L, 3] (t, h, w) as Ideogram4Transformer2DModel._run_conditional lays them out."""
    text = np.repeat(np.arange(txt_len)[:, None], 3, axis=1)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    image = np.stack([np.zeros(rows * cols), r.ravel(), c.ravel()], 1) + IMAGE_OFFSET
    return np.concatenate([text, image]).astype(np.float64)


def reference(pos, rows, cols, t, method="yarn", aspect="per-axis"):
    """float64 (cos, sin) [L, D/2] of every spatial pair (NaN on the t pairs, which stay stock) and the pairs moved."""
    half = HEAD // 2
    ratios = [rows / BASE[0], cols / BASE[1]]
    if aspect == "isotropic":
        ratios = [max(ratios)] * 2
    cos = np.full((pos.shape[0], half), np.nan)
    sin = np.full_like(cos, np.nan)
    moved = np.zeros(half, dtype=bool)
    for a, s in zip((1, 2), ratios):
        if s <= 1:
            continue
        n = SECTIONS[a]
        theta_a, c_a = THETA ** (6.0 * n / HEAD), THETA ** (-2.0 * a / HEAD)
        omega, m = frequencies(2 * n, theta_a, BASE[a - 1] * c_a, s, t, method=method)
        js = [3 * k + a for k in range(n)]
        angle = pos[:, a, None] * c_a * omega[None, :]
        cos[:, js], sin[:, js] = np.cos(angle) * m, np.sin(angle) * m
        moved[js] = True
    return cos, sin, moved


def as_pairs(freqs):
    """(cos, sin) [L, D/2] read off ComfyUI's rotation matrices [1, L, 1, D/2, 2, 2] ([[cos, -sin], [sin, cos]])."""
    f = freqs[0, :, 0].double()
    assert torch.equal(f[..., 0, 0], f[..., 1, 1]) and torch.equal(f[..., 0, 1], -f[..., 1, 0])
    return f[..., 0, 0].numpy(), f[..., 1, 0].numpy()


def test_the_class_has_the_ideogram4_row(comfy, patcher):
    cls = comfy_adapter_class(patcher.model.diffusion_model)
    assert cls.family.name == "ideogram4" and cls.family.base_grid == (128, 128)


@pytest.mark.parametrize("rows, cols", [BASE, (8, 5), (3, 8)])
def test_bit_identical_at_or_below_the_base_grid(comfy, patcher, rows, cols):
    stock = sample(comfy, patcher, rows, cols)
    assert torch.equal(sample(comfy, dype(patcher), rows, cols), stock)


@pytest.mark.parametrize("method, aspect, rows, cols", [
    ("yarn", "per-axis", 16, 12), ("ntk", "per-axis", 12, 16), ("pi", "per-axis", 16, 12),
    ("yarn", "isotropic", 16, 12), ("yarn", "per-axis", 16, 6),
])
def test_tables_follow_dype_at_every_step(comfy, patcher, method, aspect, rows, cols):
    _, stock_calls = record(comfy, patcher, rows, cols)
    out, calls = record(comfy, dype(patcher, method=method, aspect=aspect), rows, cols)
    assert torch.isfinite(out).all()
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", STEPS)
    assert [float(c["sigma"][0]) for c in calls] == [float(s) for s in sigmas[:-1]]
    pos = positions(rows, cols, TXT_LEN)
    for call, stock_call in zip(calls, stock_calls):
        # cond and uncond (CFG 2) run as one batch of two at one sigma, on one table: DyPE's t is the sigma itself
        assert len(call["tables"]) == 1 and call["batch"] == 2
        want_cos, want_sin, moved = reference(pos, rows, cols, float(call["sigma"][0]), method, aspect)
        assert moved.any()
        for got, stock in zip(call["tables"], stock_call["tables"]):
            assert got.shape == stock.shape == (1, pos.shape[0], 1, HEAD // 2, 2, 2)
            assert torch.equal(got[..., ~torch.from_numpy(moved), :, :], stock[..., ~torch.from_numpy(moved), :, :])
            cos, sin = as_pairs(got)
            np.testing.assert_allclose(cos[:, moved], want_cos[:, moved], rtol=0, atol=2e-6)
            np.testing.assert_allclose(sin[:, moved], want_sin[:, moved], rtol=0, atol=2e-6)


def test_the_time_is_the_sigma_not_the_models_own_one_minus_sigma(comfy, patcher):
    # Dy-PI: frequencies / s^(2 t^2), strongly time-dependent (YaRN's ramp on 5 pairs barely moves with t here)
    _, calls = record(comfy, dype(patcher, method="pi"), 16, 12)
    pos = positions(16, 12, TXT_LEN)
    sigma = float(calls[1]["sigma"][0])
    assert abs(sigma - 0.5) > 0.05  # 1 - sigma would give another plan
    cos, _ = as_pairs(calls[1]["tables"][0])
    want, _, moved = reference(pos, 16, 12, sigma, "pi")
    wrong, _, _ = reference(pos, 16, 12, 1.0 - sigma, "pi")
    np.testing.assert_allclose(cos[:, moved], want[:, moved], rtol=0, atol=2e-6)
    assert np.abs(cos[:, moved] - wrong[:, moved]).max() > 1e-3


def test_the_caption_never_sets_the_scale(comfy, patcher):
    # a caption longer than the image grid: at the base grid still stock, above it the image rows' tables are
    # those of the image-only pass (no caption at all)
    long = conds(txt_len=40)
    stock = sample(comfy, patcher, *BASE, positive=long[0], negative=long[1])
    assert torch.equal(sample(comfy, dype(patcher), *BASE, positive=long[0], negative=long[1]), stock)
    model = patcher.model
    clone = dype(patcher)
    clone.patch_model()
    try:
        seen = []
        hook = model.diffusion_model.layers[0].attention.register_forward_pre_hook(lambda m, a: seen.append(a[2]))
        x = torch.randn(1, 128, 16, 12, generator=torch.Generator().manual_seed(3))
        sigma = torch.tensor([0.8])
        options = {"sigmas": sigma, "wrappers": clone.wrappers}
        with torch.no_grad():
            model.apply_model(x, sigma, c_crossattn=long[0][0][0], transformer_options=dict(options))
            model.apply_model(x, sigma, transformer_options=dict(options))
        hook.remove()
    finally:
        clone.unpatch_model()
    with_caption, image_only = seen
    assert with_caption.shape[1] == 40 + 16 * 12 and image_only.shape[1] == 16 * 12
    assert torch.equal(with_caption[:, 40:], image_only)
    _, _, moved = reference(positions(16, 12, 0), 16, 12, 0.8)
    cos, _ = as_pairs(image_only)
    want, _, _ = reference(positions(16, 12, 0), 16, 12, 0.8)
    np.testing.assert_allclose(cos[:, moved], want[:, moved], rtol=0, atol=2e-6)


def test_the_input_patcher_still_samples_stock(comfy, patcher):
    stock = sample(comfy, patcher, 16, 12)
    assert not torch.equal(sample(comfy, dype(patcher), 16, 12), stock)
    assert torch.equal(sample(comfy, patcher, 16, 12), stock)
    # ComfyUI puts back what it found: the stock bound methods (it may leave them as instance attributes)
    dm = patcher.model.diffusion_model
    assert dm._backbone == type(dm)._backbone.__get__(dm)
    assert all(block.forward == type(block).forward.__get__(block) for block in dm.layers)


def test_direct_patch_and_remove(comfy):
    model = make_model()
    dm = model.diffusion_model
    x = torch.randn(1, 128, 16, 12, generator=torch.Generator().manual_seed(4))
    ctx = conds()[0][0][0]
    sigma = torch.tensor([0.7])

    def call():
        with torch.no_grad():
            return model.apply_model(x, sigma, c_crossattn=ctx, transformer_options={"sigmas": sigma})

    stock = call()
    handle = dype_rope.patch(dm, base_grid=BASE)
    assert "_backbone" in vars(dm) and all("forward" in vars(b) for b in dm.layers)
    patched = call()
    assert torch.isfinite(patched).all() and not torch.equal(patched, stock)
    with pytest.raises(ValueError, match="(?i)time"):  # a batch of two sigmas on one table: refused
        with torch.no_grad():
            two = torch.tensor([0.9, 0.4])
            model.apply_model(x.repeat(2, 1, 1, 1), two, c_crossattn=ctx.repeat(2, 1, 1),
                              transformer_options={"sigmas": two})
    handle.remove()
    assert "_backbone" not in vars(dm) and all("forward" not in vars(b) for b in dm.layers)
    assert torch.equal(call(), stock)


def test_a_second_dype_node_starts_again_from_the_stock_callables(comfy, patcher):
    once = sample(comfy, dype(patcher), 16, 12)
    twice = dype(dype(patcher, method="pi"))  # the second node replaces the first one's patches
    assert torch.equal(sample(comfy, twice, 16, 12), once)


def test_the_node_defaults_to_the_native_grid(comfy, patcher):
    from dype_rope.adapters.comfyui.node import dype_model

    clone = dype_model(patcher)  # base_resolution 0: 2048 px, 128 x 128 tokens of 16 px
    wrapper = next(iter(clone.wrappers["apply_model"]["dype_rope"]))
    assert wrapper.__self__.base_grid == (128, 128)
    # 127 x 3 tokens is inside the native grid: stock bit for bit
    assert torch.equal(sample(comfy, clone, 127, 3), sample(comfy, patcher, 127, 3))


def test_compiled_model_keeps_stock_graph_count(comfy, patcher):
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from torch._dynamo.testing import CompileCounter

    counts = []
    for p in (patcher, dype(patcher)):
        torch._dynamo.reset()
        clone, counter = p.clone(), CompileCounter()
        set_torch_compile_wrapper(clone, backend=counter)
        eager = sample(comfy, p, 16, 12)
        compiled = sample(comfy, clone, 16, 12)
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
        counts.append(counter.frame_count)
    torch._dynamo.reset()
    assert counts[0] >= 1 and counts[1] == counts[0], f"stock compiles to {counts[0]} graph(s), DyPE to {counts[1]}"


def test_a_model_without_the_layout_is_refused_by_name(comfy):
    from dype_rope.adapters.comfyui.ideogram4 import sections_of

    dm = make_model().diffusion_model
    dm.mrope_section = (6, 5, 9)  # w pairs would run past the 16 pairs of the head
    with pytest.raises(TypeError, match=r"sections \(6, 5, 9\) do not fit the 16 pairs"):
        sections_of(dm)
    dm = make_model().diffusion_model
    handle = dype_rope.patch(dm, base_grid=BASE)
    with pytest.raises(RuntimeError, match="already"):
        dype_rope.patch(dm, base_grid=BASE)
    handle.remove()
