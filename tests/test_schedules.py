"""Schedules: parity with the DyPE authors' frequencies, and the identities the method promises."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dype_rope import DyPEConfig, SCHEDULES, build_plan, kappa, register_schedule
from dype_rope.schedules import yarn_ramp
from reference_dype import frequencies

F64 = torch.float64
DATA = json.loads((Path(__file__).parent / "data" / "dype_axis_frequencies.json").read_text())
METHODS = ("pi", "ntk", "yarn")


def run(method, dim, theta, base_len, s, t, **cfg):
    config = DyPEConfig(method=method, **cfg)
    return SCHEDULES[method](dim, theta, float(base_len), torch.tensor(s, dtype=F64), torch.tensor(t, dtype=F64), config)


def numpy_plain(dim, theta):
    return np.asarray(theta, dtype=np.float64) ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)


# -- parity with the authors' published code ------------------------------------------------------------------

@pytest.mark.parametrize("case", DATA["cases"], ids=lambda c: f"{c['method']}-{'dy' if c['dynamic'] else 'st'}-"
                         f"d{c['dim']}-th{int(c['theta'])}-{c['base_len']}to{c['cur_len']}-t{c['t']}")
def test_matches_authors_frequencies(case):
    inv, mscale = run(case["method"], case["dim"], case["theta"], case["base_len"],
                      case["cur_len"] / case["base_len"], case["t"], dynamic=case["dynamic"])
    torch.testing.assert_close(inv, torch.tensor(case["inv_freq"], dtype=F64), rtol=1e-6, atol=0)
    assert mscale.item() == pytest.approx(case["mscale"], rel=1e-6)


def test_reference_data_covers_every_method():
    seen = {(c["method"], c["dynamic"]) for c in DATA["cases"]}
    assert seen == {("yarn", True), ("yarn", False), ("ntk", True), ("ntk", False)}


# -- hypothesis properties ------------------------------------------------------------------------------------

dims = st.integers(1, 40).map(lambda k: 2 * k)
thetas = st.sampled_from([256.0, 2000.0, 10000.0, 1e6]) | st.floats(10.0, 1e6)
base_lens = st.integers(2, 256)
big_scales = st.floats(1.0001, 64.0)
times = st.floats(0.0, 1.0)
lambdas = st.floats(0.25, 4.0)


@given(dim=dims, theta=thetas, L=base_lens, s=big_scales, t=times, method=st.sampled_from(METHODS),
       dynamic=st.booleans(), modulation=st.sampled_from(["multiply", "power"]))
def test_default_schedules_are_the_papers_formulas_and_constants(dim, theta, L, s, t, method, dynamic, modulation):
    """Against tests/reference_dype.py, written from the paper with its constants as literals (lambdas per method,
    YaRN's beta and gamma, mscale 0.1 ln s + 1): a wrong default in DyPEConfig fails here."""
    inv, mscale = run(method, dim, theta, L, s, t, dynamic=dynamic, yarn_modulation=modulation)
    ref, ref_mscale = frequencies(dim, theta, L, s, t, method, dynamic, modulation)
    torch.testing.assert_close(inv, torch.from_numpy(ref), rtol=1e-9, atol=0)
    assert mscale.item() == pytest.approx(ref_mscale, rel=1e-12)


@given(dim=dims, theta=thetas, L=base_lens, s=st.floats(0.05, 1.0), t=times, method=st.sampled_from(METHODS),
       dynamic=st.booleans(), modulation=st.sampled_from(["multiply", "power"]))
def test_no_rescaling_at_or_below_base_is_plain_bit_for_bit(dim, theta, L, s, t, method, dynamic, modulation):
    inv, mscale = run(method, dim, theta, L, s, t, dynamic=dynamic, yarn_modulation=modulation)
    plain, _ = run("none", dim, theta, L, s, t)
    assert torch.equal(inv, plain)
    assert torch.equal(mscale, torch.ones_like(mscale))


@given(dim=dims, theta=thetas)
def test_plain_is_theta_to_minus_2j_over_dim(dim, theta):
    plain, _ = run("none", dim, theta, 64, 3.0, 0.5)
    np.testing.assert_allclose(plain.numpy(), numpy_plain(dim, theta), rtol=1e-14)


@given(dim=dims, theta=thetas, L=base_lens, s=big_scales, t=times)
def test_static_pi_is_plain_over_s(dim, theta, L, s, t):
    inv, mscale = run("pi", dim, theta, L, s, t, dynamic=False)
    np.testing.assert_allclose(inv.numpy(), numpy_plain(dim, theta) / s, rtol=1e-13)
    assert mscale.item() == 1.0


@given(dim=dims, theta=thetas, L=base_lens, s=big_scales, t=times, ls=lambdas, lt=lambdas)
def test_dy_pi_divides_by_s_to_the_kappa(dim, theta, L, s, t, ls, lt):
    inv, _ = run("pi", dim, theta, L, s, t, lambda_s=ls, lambda_t=lt)
    expected = numpy_plain(dim, theta) / max(1.0, s ** (ls * t**lt))
    np.testing.assert_allclose(inv.numpy(), expected, rtol=1e-12)


@given(dim=st.integers(2, 40).map(lambda k: 2 * k), theta=thetas, L=base_lens, s=big_scales, t=times, ls=lambdas,
       lt=lambdas)
def test_dy_ntk_scales_the_base(dim, theta, L, s, t, ls, lt):
    inv, mscale = run("ntk", dim, theta, L, s, t, lambda_s=ls, lambda_t=lt)
    new_theta = theta * max(1.0, (s ** (dim / (dim - 2))) ** (ls * t**lt))
    np.testing.assert_allclose(inv.numpy(), numpy_plain(dim, new_theta), rtol=1e-12)
    assert mscale.item() == 1.0


@given(dim=dims, theta=thetas, L=base_lens, s=big_scales, method=st.sampled_from(METHODS),
       modulation=st.sampled_from(["multiply", "power"]))
def test_dynamic_at_t1_with_lambda_s_1_is_static(dim, theta, L, s, method, modulation):
    dy = run(method, dim, theta, L, s, 1.0, dynamic=True, lambda_s=1.0, yarn_modulation=modulation)
    static = run(method, dim, theta, L, s, 1.0, dynamic=False)
    torch.testing.assert_close(dy[0], static[0], rtol=1e-14, atol=0)
    torch.testing.assert_close(dy[1], static[1], rtol=0, atol=0)


@given(dim=dims, theta=thetas, L=base_lens, s=big_scales, method=st.sampled_from(METHODS))
def test_dynamic_at_t0_is_plain(dim, theta, L, s, method):
    inv, mscale = run(method, dim, theta, L, s, 0.0, dynamic=True)
    plain, _ = run("none", dim, theta, L, s, 0.0)
    assert torch.equal(inv, plain)
    expected_mscale = 0.1 * math.log(s) + 1 if method == "yarn" else 1.0  # YaRN's temperature does not depend on t
    assert mscale.item() == pytest.approx(expected_mscale, rel=1e-14)


@given(dim=dims, theta=thetas, L=base_lens, s=big_scales, t=times, ls=lambdas, lt=lambdas,
       method=st.sampled_from(METHODS), dynamic=st.booleans(), modulation=st.sampled_from(["multiply", "power"]))
def test_finite_and_positive_for_every_valid_input(dim, theta, L, s, t, ls, lt, method, dynamic, modulation):
    inv, mscale = run(method, dim, theta, L, s, t, dynamic=dynamic, lambda_s=ls, lambda_t=lt,
                      yarn_modulation=modulation)
    assert torch.isfinite(inv).all() and (inv > 0).all()
    assert torch.isfinite(mscale).all() and (mscale >= 1).all()


@given(dim=dims, theta=thetas, L=base_lens, s=big_scales, t=times, dynamic=st.booleans(),
       modulation=st.sampled_from(["multiply", "power"]))
def test_yarn_lies_between_pi_and_plain(dim, theta, L, s, t, dynamic, modulation):
    inv, mscale = run("yarn", dim, theta, L, s, t, dynamic=dynamic, yarn_modulation=modulation)
    plain = torch.from_numpy(numpy_plain(dim, theta))
    slack = 1e-12
    assert (inv <= plain * (1 + slack)).all()
    assert (inv >= plain / s * (1 - slack)).all()
    assert mscale.item() == pytest.approx(0.1 * math.log(s) + 1, rel=1e-14)


@given(dim=dims, theta=thetas, L=base_lens, s=big_scales)
def test_dy_yarn_tends_continuously_to_plain(dim, theta, L, s):
    plain = run("none", dim, theta, L, s, 0.0)[0]
    gaps = [(run("yarn", dim, theta, L, s, t)[0] / plain - 1).abs().max().item() for t in (1e-2, 1e-3, 1e-4, 1e-6)]
    assert gaps[-1] == 0.0  # thresholds this small put both ends of every ramp at dim/2
    assert all(a >= b for a, b in zip(gaps, gaps[1:]))


@given(t=times, ls=lambdas, lt=lambdas)
def test_kappa(t, ls, lt):
    assert kappa(torch.tensor(t, dtype=F64), ls, lt).item() == pytest.approx(ls * t**lt, rel=1e-14, abs=1e-300)


# -- hand-derived cases ---------------------------------------------------------------------------------------

def test_yarn_regions_flux_axis_at_2x():
    """FLUX spatial axis (56 channels, theta 1e4, L = 64) at s = 2, static: derive the four region borders by hand."""
    dim, theta, L, s = 56, 10000.0, 64, 2.0

    def c(rho):
        return dim * math.log(L / (2 * math.pi * rho)) / (2 * math.log(theta))

    # c(16) = -1.37, c(2) = 4.95, c(1.25) = 6.38, c(0.75) = 7.93 (56 ln(64 / (2 pi rho)) / (2 ln 1e4))
    low_g, high_g = max(0, math.floor(c(16))), math.ceil(c(2))
    low_b, high_b = math.floor(c(1.25)), math.ceil(c(0.75))
    assert (low_g, high_g, low_b, high_b) == (0, 5, 6, 8)
    inv, _ = run("yarn", dim, theta, L, s, 1.0, dynamic=False)
    plain = numpy_plain(dim, theta)
    ntk = numpy_plain(dim, theta * s ** (dim / (dim - 2)))
    j = np.arange(dim // 2)
    ramp_g = np.clip((j - low_g) / (high_g - low_g), 0, 1)
    ramp_b = np.clip((j - low_b) / (high_b - low_b), 0, 1)
    expected = (plain / s * ramp_b + ntk * (1 - ramp_b)) * ramp_g + plain * (1 - ramp_g)
    np.testing.assert_allclose(inv.numpy(), expected, rtol=1e-14)
    assert inv[0].item() == plain[0]  # j below the gamma range: untouched
    np.testing.assert_allclose(inv[8:].numpy(), plain[8:] / s, rtol=1e-14)  # above the beta range: PI


def test_yarn_ramp_degenerate_range_gets_the_authors_epsilon():
    # c(rho_hi) and c(rho_lo) floor/ceil to the same index only when both are that integer exactly;
    # here both thresholds are huge so both ends clamp to 0 and the ramp is (j - 0) / 0.001.
    ramp = yarn_ramp(8, 10000.0, 64.0, torch.tensor(1e9, dtype=F64), torch.tensor(1e8, dtype=F64))
    assert ramp.tolist() == [0.0, 1.0, 1.0, 1.0]


def test_power_modulation_raises_thresholds_to_kappa():
    dim, theta, L, s, t = 56, 10000.0, 64, 4.0, 0.5
    k = 2.0 * t**2.0
    inv, _ = run("yarn", dim, theta, L, s, t, yarn_modulation="power")
    static = run("yarn", dim, theta, L, s, 1.0, dynamic=False,
                 **{"beta": (1.25**k, 0.75**k), "gamma": (16**k, 2**k)})[0]
    torch.testing.assert_close(inv, static, rtol=1e-14, atol=0)


def test_batched_scale_and_time_broadcast():
    s = torch.tensor([[1.0], [2.0], [3.0]], dtype=F64)
    t = torch.tensor([1.0, 0.5], dtype=F64)
    cfg = DyPEConfig(method="yarn")
    inv, mscale = SCHEDULES["yarn"](16, 10000.0, 8.0, s, t, cfg)
    assert inv.shape == (3, 2, 8) and mscale.shape == (3, 2)
    for i in range(3):
        for k in range(2):
            one, ms = SCHEDULES["yarn"](16, 10000.0, 8.0, s[i, 0], t[k], cfg)
            assert torch.equal(inv[i, k], one) and torch.equal(mscale[i, k], ms)


# -- registry and config --------------------------------------------------------------------------------------

def test_user_schedule_registers_and_builds_plans():
    def halve(dim, theta, base_len, scale, t, cfg):
        plain, ones = SCHEDULES["none"](dim, theta, base_len, scale, t, cfg)
        return plain / 2, ones

    register_schedule("halve-for-test", halve)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_schedule("halve-for-test", halve)
        plan = build_plan((4, 6), 100.0, torch.tensor([2.0, 3.0], dtype=F64), torch.tensor(0.5, dtype=F64),
                          DyPEConfig(method="halve-for-test"))
        expected = np.concatenate([numpy_plain(4, 100.0), numpy_plain(6, 100.0)]) / 2
        np.testing.assert_allclose(plan.inv_freq.numpy(), expected, rtol=1e-15)
        assert plan.pair_axis.tolist() == [0, 0, 1, 1, 1]
    finally:
        SCHEDULES.pop("halve-for-test")


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="linear"), "unknown method 'linear'"),
    (dict(lambda_s=0.0), "lambda_s must be finite and > 0"),
    (dict(lambda_t=float("nan")), "lambda_t must be finite"),
    (dict(lambda_s="2"), "lambda_s must be a real number"),
    (dict(yarn_modulation="exp"), "yarn_modulation must be one of"),
    (dict(beta=(0.75, 1.25)), "high > low"),
    (dict(dynamic="yes"), "dynamic must be a bool"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        DyPEConfig(**kwargs)


def test_config_defaults_follow_the_method():
    assert (DyPEConfig(method="yarn").lambda_s, DyPEConfig(method="yarn").lambda_t) == (1.0, 2.0)
    assert (DyPEConfig(method="ntk").lambda_s, DyPEConfig(method="ntk").lambda_t) == (2.0, 2.0)
    assert (DyPEConfig(method="pi").lambda_s, DyPEConfig(method="pi").lambda_t) == (2.0, 2.0)
    power = DyPEConfig(method="yarn", yarn_modulation="power")
    assert (power.lambda_s, power.lambda_t) == (2.0, 2.0)
    assert DyPEConfig(method="yarn", lambda_t=3.0).lambda_t == 3.0
