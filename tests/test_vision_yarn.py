"""Vision-YaRN and YaRN's two attention temperatures: against the float64 reference written from the equations
(tests/reference_vision_yarn.py), hand-derived cases, the identities docs/method.md promises (M16 - M19), the
global ratio build_plan hands to a schedule, the settings' validation, and patch() / enable() passing them on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dype_rope
from dype_rope import DyPEConfig, SCHEDULES, build_plan, register_schedule
from reference_vision_yarn import plain, ramp, temperature, vision_yarn_axis, yarn_axis

F64 = torch.float64


def axis(dim, theta, L, s, t, global_scale=None, **cfg):
    """The library's vision_yarn on one axis, float64 scalars in, numpy out."""
    config = DyPEConfig(method="vision_yarn", **cfg)
    g = None if global_scale is None else torch.tensor(global_scale, dtype=F64)
    inv, m = SCHEDULES["vision_yarn"](dim, theta, float(L), torch.tensor(s, dtype=F64), torch.tensor(t, dtype=F64),
                                      config, global_scale=g)
    return inv.numpy(), float(m)


dims = st.integers(2, 40).map(lambda k: 2 * k)
thetas = st.sampled_from([256.0, 2000.0, 10000.0]) | st.floats(10.0, 1e6)
base_lens = st.integers(2, 256)
times = st.floats(0.0, 1.0)
lambdas = st.floats(0.25, 4.0)


@given(dim=dims, theta=thetas, L=base_lens, s=st.floats(0.2, 16.0), extra=st.floats(1.0, 8.0), t=times,
       ls=lambdas, lt=st.floats(0.0, 4.0), modulation=st.sampled_from(["power", "multiply"]), dynamic=st.booleans(),
       start=st.sampled_from([1.0, 0.6, 0.25, 0.0]), form=st.sampled_from(["log", "log_sqrt"]))
def test_follows_the_equations(dim, theta, L, s, extra, t, ls, lt, modulation, dynamic, start, form):
    """Any axis ratio, an image ratio at least as large (the axis need not be the largest one, nor above its
    base), every setting: the frequencies and the temperature of the reference."""
    s_g = max(s * extra, 1.0001)
    start = start if dynamic else 1.0
    inv, m = axis(dim, theta, L, s, t, s_g, lambda_s=ls, lambda_t=lt, yarn_modulation=modulation, dynamic=dynamic,
                  start_sigma=start, mscale=form)
    ref, ref_m = vision_yarn_axis(dim, theta, L, s, s_g, t, lambda_s=ls, lambda_t=lt, modulation=modulation,
                                  dynamic=dynamic, start_sigma=start, form=form)
    np.testing.assert_allclose(inv, ref, rtol=1e-9, atol=0)
    assert m == pytest.approx(ref_m, rel=1e-12)


@given(dim=dims, theta=thetas, L=base_lens, s=st.floats(0.2, 16.0), t=times, form=st.sampled_from(["log", "log_sqrt"]),
       modulation=st.sampled_from(["power", "multiply"]), dynamic=st.booleans())
def test_yarn_takes_either_temperature(dim, theta, L, s, t, form, modulation, dynamic):
    cfg = DyPEConfig(method="yarn", mscale=form, yarn_modulation=modulation, dynamic=dynamic)
    inv, m = SCHEDULES["yarn"](dim, theta, float(L), torch.tensor(s, dtype=F64), torch.tensor(t, dtype=F64), cfg)
    ref, ref_m = yarn_axis(dim, theta, L, s, t, lambda_s=cfg.lambda_s, lambda_t=cfg.lambda_t, modulation=modulation,
                           dynamic=dynamic, form=form)
    np.testing.assert_allclose(inv.numpy(), ref, rtol=1e-9, atol=0)
    assert float(m) == pytest.approx(ref_m, rel=1e-12)


def test_temperatures_by_hand():
    # s = 4: ln 4 = 1.3862943611198906
    assert temperature(4.0, "log") == pytest.approx(1.13862943611198906, rel=1e-15)
    assert temperature(4.0, "log_sqrt") == pytest.approx(1.06931471805599453, rel=1e-15)
    for form, expected in (("log", 1.13862943611198906), ("log_sqrt", 1.06931471805599453)):
        cfg = DyPEConfig(method="yarn", mscale=form)
        _, m = SCHEDULES["yarn"](56, 1e4, 64.0, torch.tensor(4.0, dtype=F64), torch.tensor(0.3, dtype=F64), cfg)
        assert float(m) == pytest.approx(expected, rel=1e-15)
    # Vision-YaRN at s_g = 4, lambda_t = 2: from the first step (t0 = 1) at t = 0.5, (0.5)**2 of the excess;
    # with t0 = 0.25 the full start value at t = 0.5 and (0.125 / 0.25)**2 = 1/4 of it at t = 0.125.
    _, m = axis(56, 1e4, 64, 4.0, 0.5)
    assert m == pytest.approx(1 + 0.138629436111989 / 4, rel=1e-13)
    _, m = axis(56, 1e4, 64, 4.0, 0.5, start_sigma=0.25)
    assert m == pytest.approx(1.138629436111989, rel=1e-13)
    _, m = axis(56, 1e4, 64, 4.0, 0.125, start_sigma=0.25)
    assert m == pytest.approx(1 + 0.138629436111989 / 4, rel=1e-13)


def test_flux_rows_at_2048_by_1024_by_hand():
    """FLUX's 56-channel axis (theta 1e4, L = 64 tokens), a 2048 x 1024 px image at t = 1: the row axis keeps its
    64 tokens (s = 1, so no PI) but takes NTK with the image's ratio 2 above pair c(beta0 ** 2)."""
    dim, theta, L = 56, 1e4, 64.0

    def c(rho):
        return dim * math.log(L / (2 * math.pi * rho)) / (2 * math.log(theta))

    # kappa(1) = 2: thresholds 1.5625, 0.5625, 256, 4 -> c = 5.70, 8.80, -9.80, 2.84
    lo_b, hi_b, lo_g, hi_g = math.floor(c(1.5625)), math.ceil(c(0.5625)), max(0, math.floor(c(256))), math.ceil(c(4))
    assert (lo_b, hi_b, lo_g, hi_g) == (5, 9, 0, 3)
    j = np.arange(dim // 2)
    omega = theta ** (-2 * j / dim)
    ntk = (theta * 2 ** (dim / (dim - 2))) ** (-2 * j / dim)
    rb = np.clip((j - lo_b) / (hi_b - lo_b), 0, 1)
    rg = np.clip((j - lo_g) / (hi_g - lo_g), 0, 1)
    expected = (omega * rb + ntk * (1 - rb)) * rg + omega * (1 - rg)
    rows, m = axis(dim, theta, L, 1.0, 1.0, global_scale=2.0)
    np.testing.assert_allclose(rows, expected, rtol=1e-13)
    assert rows[0] == omega[0] and rows[-1] == omega[-1]  # j = 0: gamma ramp 0; j >= 9: beta ramp 1 and PI by 1
    assert m == pytest.approx(0.1 * math.log(2) + 1, rel=1e-14)
    cols, _ = axis(dim, theta, L, 2.0, 1.0, global_scale=2.0)
    np.testing.assert_allclose(cols[9:], omega[9:] / 2, rtol=1e-14)  # the long axis: PI by its own ratio


@given(dim=dims, theta=thetas, L=base_lens, s=st.floats(0.05, 1.0), scale_g=st.floats(0.05, 1.0), t=times,
       modulation=st.sampled_from(["power", "multiply"]), dynamic=st.booleans(), form=st.sampled_from(["log", "log_sqrt"]))
def test_at_or_below_the_base_grid_is_plain_bit_for_bit(dim, theta, L, s, scale_g, t, modulation, dynamic, form):
    g = max(s, scale_g)
    inv, m = axis(dim, theta, L, s, t, g, yarn_modulation=modulation, dynamic=dynamic, mscale=form)
    stock, _ = SCHEDULES["none"](dim, theta, float(L), torch.tensor(s, dtype=F64), torch.tensor(t, dtype=F64),
                                 DyPEConfig(method="none"))
    assert np.array_equal(inv, stock.numpy())
    assert m == 1.0


@given(dim=dims, theta=thetas, L=base_lens, s=st.floats(1.0001, 16.0), extra=st.floats(1.0, 4.0))
def test_at_t0(dim, theta, L, s, extra):
    """t = 0, power (ComfyUI-DyPE): the temperature is 1 and the thresholds all 1, so pairs up to c(1) are plain
    and those past it keep PI by the axis's own ratio. multiply: plain RoPE exactly."""
    g = s * extra
    inv, m = axis(dim, theta, L, s, 0.0, g)
    assert m == 1.0
    c1 = dim * math.log(L / (2 * math.pi)) / (2 * math.log(theta))
    low = min(max(math.floor(c1), 0), dim // 2)
    j = np.arange(dim // 2)
    base = plain(dim, theta)
    np.testing.assert_allclose(inv, np.where(j <= low, base, base / s), rtol=1e-14)
    inv, m = axis(dim, theta, L, s, 0.0, g, yarn_modulation="multiply")
    stock = SCHEDULES["none"](dim, theta, float(L), torch.tensor(s, dtype=F64), torch.tensor(0.0, dtype=F64),
                              DyPEConfig(method="none"))[0].numpy()
    assert m == 1.0 and np.array_equal(inv, stock)


@given(dim=dims, theta=thetas, L=base_lens, s=st.floats(1.0001, 16.0), t=times,
       modulation=st.sampled_from(["power", "multiply"]))
def test_a_square_image_has_yarns_frequencies(dim, theta, L, s, t, modulation):
    """With every axis at the image's ratio, the PI and NTK parts share s: Vision-YaRN's frequencies are Dy-YaRN's
    (only the temperature differs: it decays)."""
    inv, _ = axis(dim, theta, L, s, t, s, yarn_modulation=modulation)
    yarn, _ = SCHEDULES["yarn"](dim, theta, float(L), torch.tensor(s, dtype=F64), torch.tensor(t, dtype=F64),
                                DyPEConfig(method="yarn", yarn_modulation=modulation))
    np.testing.assert_allclose(inv, yarn.numpy(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.35, 0.6, 0.9, 1.0])
@pytest.mark.parametrize("rows, cols", [(128, 128), (128, 64), (96, 160), (256, 64)])
def test_reproduces_comfyui_dype_range_at_flux_sizes(rows, cols, t):
    """At FLUX's real sizes (axes of 56 channels, theta 1e4, a 64-token base grid) the range ends of ComfyUI-DyPE's
    ramp need none of dype_rope's extra clamping: the two give the same frequencies."""
    s_r, s_c = rows / 64, cols / 64
    g = max(s_r, s_c)
    for s in (s_r, s_c):
        ours, _ = axis(56, 1e4, 64, s, t, g)
        theirs, _ = vision_yarn_axis(56, 1e4, 64, s, g, t, clamp="comfyui-dype")
        np.testing.assert_allclose(ours, theirs, rtol=1e-14)


def test_a_small_base_grid_where_comfyui_dypes_range_inverts():
    """A 16-token base grid at t = 1: ceil(c(gamma1 ** 2 = 4)) = -1 < 0, so ComfyUI-DyPE's range (0, -1) inverts
    and its gamma ramp is 0 on every pair (plain RoPE at every frequency: no extrapolation at all). dype_rope
    clamps the end into [0, d/2]: the ramp rises at once and the high pairs are extrapolated."""
    dim, theta, L = 56, 1e4, 16.0
    c = dim * math.log(L / (2 * math.pi * 4.0)) / (2 * math.log(theta))
    assert math.ceil(c) == -1
    theirs = ramp(dim, theta, L, 256.0, 4.0, clamp="comfyui-dype")
    assert (theirs == 0).all()
    ours = ramp(dim, theta, L, 256.0, 4.0)
    assert ours[0] == 0 and (ours[1:] == 1).all()
    inv, _ = axis(dim, theta, L, 2.0, 1.0, 2.0)
    assert (inv[1:] < plain(dim, theta)[1:]).all()


# -- build_plan and the global ratio --------------------------------------------------------------------------

def test_build_plan_gives_every_rescaled_axis_the_images_ratio():
    """FLUX's layout (index, rows, cols): the index axis is plain, the rows see the image's ratio (the columns')."""
    dims, theta, base = (16, 56, 56), 1e4, (1.0, 64.0, 64.0)
    scales = torch.tensor([1.0, 0.75, 2.5], dtype=F64)
    t = torch.tensor(0.4, dtype=F64)
    plan = build_plan(dims, theta, scales, t, DyPEConfig(method="vision_yarn"), base, rescaled_axes=(1, 2))
    expected, ms = [plain(16, theta)], [np.ones(8)]
    for s in (0.75, 2.5):
        omega, m = vision_yarn_axis(56, theta, 64, s, 2.5, 0.4)
        expected.append(omega)
        ms.append(np.full(28, m))
    np.testing.assert_allclose(plan.inv_freq.numpy(), np.concatenate(expected), rtol=1e-12)
    np.testing.assert_allclose(plan.mscale.numpy(), np.concatenate(ms), rtol=1e-14)
    stock = SCHEDULES["none"](16, theta, 1.0, scales[0], t, DyPEConfig(method="none"))[0]
    assert torch.equal(plan.inv_freq[:8], stock) and (plan.mscale[:8] == 1).all()


@given(method=st.sampled_from(["none", "pi", "ntk", "yarn"]), s1=st.floats(0.2, 8.0), s2=st.floats(0.2, 8.0),
       t=times, modulation=st.sampled_from(["power", "multiply"]))
def test_other_schedules_are_unchanged_by_rescaled_axes(method, s1, s2, t, modulation):
    """Naming the rescaled axes changes nothing for the schedules that do not couple them: bit for bit."""
    cfg = DyPEConfig(method=method, yarn_modulation=modulation)
    scales = torch.tensor([1.0, s1, s2], dtype=F64)
    a = build_plan((8, 12, 12), 1e4, scales, torch.tensor(t, dtype=F64), cfg, (1.0, 8.0, 8.0))
    b = build_plan((8, 12, 12), 1e4, scales, torch.tensor(t, dtype=F64), cfg, (1.0, 8.0, 8.0), rescaled_axes=(1, 2))
    assert torch.equal(a.inv_freq, b.inv_freq) and torch.equal(a.mscale, b.mscale)


def test_batched_plans_use_each_samples_own_global_ratio():
    scales = torch.tensor([[1.0, 2.0, 1.0], [1.0, 1.0, 3.0], [1.0, 0.5, 0.5]], dtype=F64)
    t = torch.tensor([1.0, 0.5, 0.2], dtype=F64)
    cfg = DyPEConfig(method="vision_yarn")
    plan = build_plan((4, 8, 8), 100.0, scales, t, cfg, (1.0, 8.0, 8.0), rescaled_axes=(1, 2))
    for b in range(3):
        one = build_plan((4, 8, 8), 100.0, scales[b], t[b], cfg, (1.0, 8.0, 8.0), rescaled_axes=(1, 2))
        assert torch.equal(plan.inv_freq[b], one.inv_freq) and torch.equal(plan.mscale[b], one.mscale)
    assert (plan.mscale[2] == 1).all()  # the third image is below its base grid on both axes


def test_a_user_schedule_declaring_global_scale_receives_it():
    seen = []

    def coupled(dim, theta, base_len, scale, t, cfg, *, global_scale):
        seen.append(global_scale.clone())
        return SCHEDULES["none"](dim, theta, base_len, scale, t, cfg)

    register_schedule("coupled-for-test", coupled)
    try:
        build_plan((4, 6, 6), 100.0, torch.tensor([1.0, 1.5, 2.5], dtype=F64), torch.tensor(0.5, dtype=F64),
                   DyPEConfig(method="coupled-for-test"), rescaled_axes=(1, 2))
        assert [float(g) for g in seen] == [2.5, 2.5]  # the index axis is not rescaled: not called for it
    finally:
        SCHEDULES.pop("coupled-for-test")
        dype_rope.schedules.GLOBAL_SCALE_SCHEDULES.discard("coupled-for-test")


def test_compiles_to_one_graph():
    from torch._dynamo.testing import CompileCounter

    cfg = DyPEConfig(method="vision_yarn", start_sigma=0.5)

    def plan(scales, t):
        return build_plan((16, 56, 56), 1e4, scales, t, cfg, (1.0, 64.0, 64.0), rescaled_axes=(1, 2))

    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(plan, backend=counter, fullgraph=True)
    for t in (1.0, 0.3):
        scales, t = torch.tensor([1.0, 2.0, 1.25], dtype=F64), torch.tensor(t, dtype=F64)
        got, eager = compiled(scales, t), plan(scales, t)
        torch.testing.assert_close(got.inv_freq, eager.inv_freq, rtol=1e-14, atol=0)
        torch.testing.assert_close(got.mscale, eager.mscale, rtol=1e-14, atol=0)
    torch._dynamo.reset()
    assert counter.frame_count == 1


# -- settings --------------------------------------------------------------------------------------------------

def test_vision_yarn_defaults_are_comfyui_dypes():
    cfg = DyPEConfig(method="vision_yarn")
    assert (cfg.yarn_modulation, cfg.lambda_s, cfg.lambda_t, cfg.mscale, cfg.start_sigma) == ("power", 2.0, 2.0,
                                                                                                "log", 1.0)
    assert DyPEConfig(method="yarn").yarn_modulation == "multiply"
    multiply = DyPEConfig(method="vision_yarn", yarn_modulation="multiply")
    assert (multiply.lambda_s, multiply.lambda_t) == (1.0, 2.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="yarn", mscale="sqrt"), "mscale must be one of"),
    (dict(method="ntk", mscale="log_sqrt"), "mscale='log_sqrt' sets YaRN's attention temperature"),
    (dict(method="vision_yarn", start_sigma=1.5), "start_sigma is a diffusion time from 0 to 1"),
    (dict(method="vision_yarn", start_sigma=-0.1), "start_sigma must be finite and >= 0"),
    (dict(method="vision_yarn", start_sigma=float("nan")), "start_sigma must be finite"),
    (dict(method="vision_yarn", start_sigma="1"), "start_sigma must be a real number"),
    (dict(method="yarn", start_sigma=0.5), "start_sigma=0.5 starts the decay"),
    (dict(method="vision_yarn", dynamic=False, start_sigma=0.5), "which the static method does not have"),
    (dict(method="vision_yarn", yarn_modulation="pow"), "yarn_modulation must be one of"),
])
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        DyPEConfig(**kwargs)


def test_patch_and_enable_pass_the_settings_on():
    from families.flux import flux_inputs, tiny_flux
    from tiny_pipeline import tiny_flux_pipeline

    model = tiny_flux()
    with dype_rope.patch(model, method="vision_yarn", start_sigma=0.5, mscale="log_sqrt", base_grid=(8, 8)) as h:
        assert (h.config.method, h.config.start_sigma, h.config.mscale, h.config.yarn_modulation) == (
            "vision_yarn", 0.5, "log_sqrt", "power")
        with torch.no_grad():
            out = model(**flux_inputs(8, 16, t=0.3)).sample
        assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="start_sigma=0.5 starts the decay"):
        dype_rope.patch(model, method="ntk", start_sigma=0.5)
    assert not dype_rope.is_patched(model)
    pipe = tiny_flux_pipeline()
    with dype_rope.enable(pipe, 64, 64, method="yarn", mscale="log_sqrt") as handle:
        assert handle.transformer.config.mscale == "log_sqrt"


def test_the_diffusers_flux_tables_follow_vision_yarn():
    """Through the diffusers FLUX adapter: a 8 x 20 token image on an 8 x 8 base grid, the tables of the image's
    tokens are the reference's (rows at ratio 1 take the image's 2.5 on their high frequencies), the index axis
    is plain."""
    from families.flux import TINY_FLUX, flux_inputs, tiny_flux
    from families.row import encoding_calls

    model = tiny_flux()
    dims = TINY_FLUX["axes_dims_rope"]
    x = flux_inputs(8, 20, t=0.6)
    with dype_rope.patch(model, method="vision_yarn", base_grid=(8, 8)), torch.no_grad():
        calls = encoding_calls(model, "pos_embed", lambda: model(**x))
    (args, (cos, sin)), = calls
    ids = args[0].double()
    omegas, ms = [plain(dims[0], 10000.0)], [np.ones(dims[0] // 2)]
    for d, s in zip(dims[1:], (1.0, 2.5)):
        omega, m = vision_yarn_axis(d, 10000.0, 8, s, 2.5, 0.6)
        omegas.append(omega)
        ms.append(np.full(d // 2, m))
    axis_of = np.concatenate([np.full(d // 2, a) for a, d in enumerate(dims)])
    angles = ids[:, axis_of] * torch.from_numpy(np.concatenate(omegas))
    m = torch.from_numpy(np.concatenate(ms))
    torch.testing.assert_close(cos[:, 0::2].double(), angles.cos() * m, rtol=0, atol=3e-7)
    torch.testing.assert_close(sin[:, 0::2].double(), angles.sin() * m, rtol=0, atol=3e-7)
