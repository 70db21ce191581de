"""The schedules, plans and tables on every array library: parity with the DyPE authors' numbers, the paper's
formulas (tests/reference_dype.py) and torch, and the identities the method promises, computed in each library.

float64 numpy, JAX (x64) and array-api-strict are held within 1e-12 of torch's float64 results, MLX float32
within 1e-5 (relative). tests/test_backends_snapshot.py holds torch itself to its own earlier numbers bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from array_backends import BACKENDS
from dype_rope import SCHEDULES, DyPEConfig, build_plan, plain_plan, rope_tables
from dype_rope.backend import namespace
from dype_rope.rope_formats import rotation_matrices
from reference_dype import frequencies
from test_schedules import DATA, METHODS, base_lens, big_scales, dims, lambdas, thetas, times

F64 = torch.float64
MODULATIONS = st.sampled_from(["multiply", "power"])
backends = pytest.mark.parametrize("bk", BACKENDS, ids=lambda b: b.name)


def run(bk, method, dim, theta, L, s, t, **cfg):
    """The schedule on backend `bk`, results as numpy float64 (checked to be arrays of bk's library and dtype)."""
    xp = bk.xp()
    scale, time = bk.array(s), bk.array(t)
    inv, ms = SCHEDULES[method](dim, theta, float(L), scale, time, DyPEConfig(method=method, **cfg))
    for out in (inv, ms):
        assert namespace(out) is namespace(scale), type(out)
        assert out.dtype == bk.dtype(xp)
    return bk.numpy(inv).astype(np.float64), bk.numpy(ms).astype(np.float64)


def torch_run(method, dim, theta, L, s, t, **cfg):
    inv, ms = SCHEDULES[method](dim, theta, float(L), torch.tensor(s, dtype=F64), torch.tensor(t, dtype=F64),
                                DyPEConfig(method=method, **cfg))
    return inv.numpy(), ms.numpy()


def yarn_edges_clear(dim, theta, L, s, t, method, dynamic, modulation, margin):
    """False where a YaRN ramp end c(rho) lies within `margin` of an integer: floor/ceil of it then depend on the
    last bits of float32 arithmetic, and float32 libraries may rightly round to the other side."""
    if method != "yarn" or s <= 1 or margin == 0:
        return True
    lam = (2.0, 2.0) if modulation == "power" else (1.0, 2.0)
    k = lam[0] * t ** lam[1]
    rhos = [1.25, 0.75, 16.0, 2.0]
    if dynamic:
        rhos = [r**k if modulation == "power" else r * k for r in rhos]
    for rho in rhos:
        if rho > 0:
            c = dim * math.log(L / (2 * math.pi * rho)) / (2 * math.log(theta))
            if abs(c - round(c)) < margin:
                return False
    return True


def margin(bk):
    return 1e-3 if bk.rtol > 1e-9 else 0.0


# -- parity with the authors' published code ------------------------------------------------------------------

@backends
def test_matches_authors_frequencies(bk):
    for case in DATA["cases"]:
        s, t = case["cur_len"] / case["base_len"], case["t"]
        args = (case["method"], case["dim"], case["theta"], case["base_len"], s, t)
        inv, ms = run(bk, *args, dynamic=case["dynamic"])
        np.testing.assert_allclose(inv, case["inv_freq"], rtol=max(1e-6, bk.rtol), atol=0, err_msg=str(args))
        np.testing.assert_allclose(ms, case["mscale"], rtol=max(1e-6, bk.rtol))
        ref_inv, ref_ms = torch_run(*args, dynamic=case["dynamic"])
        np.testing.assert_allclose(inv, ref_inv, rtol=bk.rtol, atol=0, err_msg=str(args))
        np.testing.assert_allclose(ms, ref_ms, rtol=bk.rtol, atol=0)


# -- hypothesis properties, per library -----------------------------------------------------------------------

@backends
@given(dim=dims, theta=thetas, L=base_lens, s=big_scales, t=times, method=st.sampled_from(METHODS),
       dynamic=st.booleans(), modulation=MODULATIONS)
def test_papers_formulas_and_torch(bk, dim, theta, L, s, t, method, dynamic, modulation):
    assume(yarn_edges_clear(dim, theta, L, s, t, method, dynamic, modulation, margin(bk)))
    inv, ms = run(bk, method, dim, theta, L, s, t, dynamic=dynamic, yarn_modulation=modulation)
    ref, ref_ms = frequencies(dim, theta, L, s, t, method, dynamic, modulation)
    np.testing.assert_allclose(inv, ref, rtol=max(1e-9, bk.rtol), atol=0)
    np.testing.assert_allclose(ms, ref_ms, rtol=max(1e-12, bk.rtol))
    t_inv, t_ms = torch_run(method, dim, theta, L, s, t, dynamic=dynamic, yarn_modulation=modulation)
    np.testing.assert_allclose(inv, t_inv, rtol=bk.rtol, atol=0)
    np.testing.assert_allclose(ms, t_ms, rtol=bk.rtol, atol=0)


@backends
@given(dim=dims, theta=thetas, L=base_lens, s=st.floats(0.05, 1.0), t=times, method=st.sampled_from(METHODS),
       dynamic=st.booleans(), modulation=MODULATIONS)
def test_no_rescaling_at_or_below_base_is_plain_exactly(bk, dim, theta, L, s, t, method, dynamic, modulation):
    inv, ms = run(bk, method, dim, theta, L, s, t, dynamic=dynamic, yarn_modulation=modulation)
    plain, _ = run(bk, "none", dim, theta, L, s, t)
    assert np.array_equal(inv, plain) and np.array_equal(ms, np.ones_like(ms))


@backends
@given(dim=dims, theta=thetas, L=base_lens, s=big_scales, method=st.sampled_from(METHODS))
def test_dynamic_at_t0_is_plain_exactly(bk, dim, theta, L, s, method):
    inv, ms = run(bk, method, dim, theta, L, s, 0.0)
    plain, _ = run(bk, "none", dim, theta, L, s, 0.0)
    assert np.array_equal(inv, plain)
    expected = 0.1 * math.log(s) + 1 if method == "yarn" else 1.0
    np.testing.assert_allclose(ms, expected, rtol=max(1e-14, bk.rtol))


@backends
@given(dim=dims, theta=thetas, L=base_lens, s=big_scales, t=times, ls=lambdas, lt=lambdas,
       method=st.sampled_from(METHODS), dynamic=st.booleans(), modulation=MODULATIONS)
def test_finite_positive_and_yarn_between_pi_and_plain(bk, dim, theta, L, s, t, ls, lt, method, dynamic, modulation):
    inv, ms = run(bk, method, dim, theta, L, s, t, dynamic=dynamic, lambda_s=ls, lambda_t=lt,
                  yarn_modulation=modulation)
    assert np.isfinite(inv).all() and (inv > 0).all() and np.isfinite(ms).all() and (ms >= 1).all()
    if method == "yarn":
        plain = np.asarray([theta ** (-2.0 * j / dim) for j in range(dim // 2)])
        slack = 10 * max(1e-12, bk.rtol)
        assert (inv <= plain * (1 + slack)).all() and (inv >= plain / s * (1 - slack)).all()


@backends
def test_batched_scale_and_time_broadcast(bk):
    s, t = [[1.0], [2.0], [3.0]], [1.0, 0.5]
    cfg = DyPEConfig(method="yarn")
    inv, ms = SCHEDULES["yarn"](16, 10000.0, 8.0, bk.array(s), bk.array(t), cfg)
    assert tuple(inv.shape) == (3, 2, 8) and tuple(ms.shape) == (3, 2)
    t_inv, t_ms = SCHEDULES["yarn"](16, 10000.0, 8.0, torch.tensor(s, dtype=F64), torch.tensor(t, dtype=F64), cfg)
    np.testing.assert_allclose(bk.numpy(inv), t_inv.numpy(), rtol=bk.rtol, atol=0)
    np.testing.assert_allclose(bk.numpy(ms), t_ms.numpy(), rtol=bk.rtol, atol=0)


# -- plans and tables -----------------------------------------------------------------------------------------

AXES, BASE = (16, 56, 56), (1.0, 64.0, 64.0)


def ids(rows=6, cols=5):
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([np.zeros_like(r), r, c], axis=-1).reshape(-1, 3).astype(np.float32)


@backends
@pytest.mark.parametrize("method", ["yarn", "ntk", "pi"])
def test_plan_and_tables_match_torch(bk, method):
    xp = bk.xp()
    cfg = DyPEConfig(method=method)
    scales, t = [1.0, 2.0, 3.5], 0.4
    plan = build_plan(AXES, 10000.0, bk.array(scales), bk.array(t), cfg, BASE)
    ref = build_plan(AXES, 10000.0, torch.tensor(scales, dtype=F64), torch.tensor(t, dtype=F64), cfg, BASE)
    assert plan.inv_freq.dtype == bk.dtype(xp) and namespace(plan.pair_axis) is namespace(plan.inv_freq)
    np.testing.assert_allclose(bk.numpy(plan.inv_freq), ref.inv_freq.numpy(), rtol=bk.rtol, atol=0)
    np.testing.assert_allclose(bk.numpy(plan.mscale), ref.mscale.numpy(), rtol=bk.rtol, atol=0)
    assert bk.numpy(plan.pair_axis).tolist() == ref.pair_axis.tolist()
    pos = xp.array(ids()) if bk.name == "mlx" else xp.asarray(ids().tolist(), dtype=xp.float32)
    for layout in ("interleaved", "half"):
        cos, sin = rope_tables(pos, plan, layout)
        t_cos, t_sin = rope_tables(torch.from_numpy(ids()), ref, layout)
        assert cos.dtype == xp.float32 and namespace(cos) is namespace(pos)
        # float32 tables: both round the same float64 (or float32, MLX) angles' cos to float32
        np.testing.assert_allclose(bk.numpy(cos), t_cos.numpy(), rtol=0, atol=max(1e-6, 10 * bk.rtol))
        np.testing.assert_allclose(bk.numpy(sin), t_sin.numpy(), rtol=0, atol=max(1e-6, 10 * bk.rtol))
    rot = rotation_matrices(pos, plan)
    np.testing.assert_allclose(bk.numpy(rot), rotation_matrices(torch.from_numpy(ids()), ref).numpy(), rtol=0,
                               atol=max(1e-6, 10 * bk.rtol))


@backends
def test_plain_plan_on_every_library(bk):
    like = bk.array(0.0)
    plan = plain_plan(AXES, 10000.0, like=like)
    ref = plain_plan(AXES, 10000.0, dtype=F64)
    assert plan.inv_freq.dtype == like.dtype and namespace(plan.inv_freq) is namespace(like)
    np.testing.assert_allclose(bk.numpy(plan.inv_freq), ref.inv_freq.numpy(), rtol=bk.rtol, atol=0)
    assert np.array_equal(bk.numpy(plan.mscale), np.ones(sum(AXES) // 2))


def test_mlx_float64_on_the_cpu_stream():
    """MLX computes float64 on its CPU stream only; there the dtype is kept (its trigonometry is float32-accurate,
    so the tables are held to float32's tolerance)."""
    mx = BACKENDS[3].xp()
    with mx.stream(mx.cpu):
        plan = build_plan(AXES, 10000.0, mx.array([1.0, 2.0, 3.0], dtype=mx.float64), 0.4, DyPEConfig(), BASE)
        cos, _ = rope_tables(mx.array(ids()), plan)
    assert plan.inv_freq.dtype == mx.float64 and cos.dtype == mx.float32
    ref = build_plan(AXES, 10000.0, torch.tensor([1.0, 2.0, 3.0], dtype=F64), torch.tensor(0.4, dtype=F64),
                     DyPEConfig(), BASE)
    np.testing.assert_allclose(np.array(plan.inv_freq), ref.inv_freq.numpy(), rtol=1e-5, atol=0)
    np.testing.assert_allclose(np.array(cos), rope_tables(torch.from_numpy(ids()), ref)[0].numpy(), rtol=0, atol=1e-5)


def test_jax_plan_under_jit():
    """A traced call (jax.jit) takes the same code: the namespace lookup is a type lookup, not a value read."""
    jnp = BACKENDS[1].xp()
    import jax
    cfg = DyPEConfig()
    fn = jax.jit(lambda s, t: build_plan(AXES, 10000.0, s, t, cfg, BASE).inv_freq)
    s, t = jnp.asarray([1.0, 2.0, 3.0]), jnp.asarray(0.3)
    ref = build_plan(AXES, 10000.0, torch.tensor([1.0, 2.0, 3.0], dtype=F64), torch.tensor(0.3, dtype=F64), cfg, BASE)
    np.testing.assert_allclose(np.asarray(fn(s, t)), ref.inv_freq.numpy(), rtol=1e-12, atol=0)


# -- what is refused ------------------------------------------------------------------------------------------

def test_unsupported_arrays_are_refused_by_name():
    class Grid:
        shape, dtype = (3,), "float64"

    with pytest.raises(TypeError, match="cannot compute with .*Grid"):
        build_plan(AXES, 10000.0, Grid(), 0.5, DyPEConfig(), BASE)
    with pytest.raises(TypeError, match="needs at least one array"):
        SCHEDULES["yarn"](16, 10000.0, 8.0, 2.0, 0.5, DyPEConfig())


def test_mixed_libraries_are_refused():
    with pytest.raises(TypeError, match="pass both from one library"):
        build_plan(AXES, 10000.0, np.array([1.0, 2.0, 2.0]), torch.tensor(0.5, dtype=F64), DyPEConfig(), BASE)
    plan = build_plan(AXES, 10000.0, np.array([1.0, 2.0, 2.0]), 0.5, DyPEConfig(), BASE)
    with pytest.raises(TypeError, match="pass both from one library"):
        rope_tables(torch.zeros(4, 3), plan)


# -- user schedules -------------------------------------------------------------------------------------------

def half_pi(dim, theta, base_len, scale, t, cfg):
    """docs/backends.md's example: Dy-PI at half strength, written over the array API."""
    from dype_rope.backend import broadcast_shapes, device
    from dype_rope.schedules import kappa, plain_inv_freq

    xp = namespace(scale)
    plain = plain_inv_freq(dim, theta, scale)
    factor = xp.clip(scale ** (0.5 * kappa(t, cfg.lambda_s, cfg.lambda_t)), min=1.0)
    inv_freq = xp.where(scale[..., None] > 1, plain / factor[..., None], plain)
    batch = broadcast_shapes(scale.shape, t.shape)
    ones = xp.ones(batch, dtype=scale.dtype, device=device(scale))
    return xp.broadcast_to(inv_freq, (*batch, dim // 2)), ones


@pytest.fixture
def registered_half_pi():
    from dype_rope import register_schedule

    register_schedule("half-pi-for-test", half_pi)
    yield "half-pi-for-test"
    SCHEDULES.pop("half-pi-for-test")


@backends
def test_array_api_user_schedule_runs_on_every_library(bk, registered_half_pi):
    cfg = DyPEConfig(method=registered_half_pi, lambda_s=2.0, lambda_t=1.0)
    plan = build_plan((8, 12), 100.0, bk.array([0.5, 4.0]), bk.array(0.5), cfg, (1.0, 16.0))
    plain = [100.0 ** (-2.0 * j / d) for d in (8, 12) for j in range(d // 2)]
    expected = np.asarray(plain) / np.asarray([1.0] * 4 + [4.0 ** (0.5 * 2.0 * 0.5)] * 6)
    np.testing.assert_allclose(bk.numpy(plan.inv_freq), expected, rtol=max(1e-14, bk.rtol), atol=0)


def test_torch_written_user_schedule_keeps_working_on_torch():
    from dype_rope import register_schedule

    def torch_half(dim, theta, base_len, scale, t, cfg):
        plain = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=scale.dtype) / dim))
        inv = torch.where(scale.unsqueeze(-1) > 1, plain / torch.clamp_min(scale, 1.0).sqrt().unsqueeze(-1), plain)
        return inv, torch.ones_like(scale)

    register_schedule("torch-half-for-test", torch_half)
    try:
        plan = build_plan((4, 6), 100.0, torch.tensor([1.0, 4.0], dtype=F64), torch.tensor(0.5, dtype=F64),
                          DyPEConfig(method="torch-half-for-test"))
    finally:
        SCHEDULES.pop("torch-half-for-test")
    expected = np.asarray([100.0 ** (-2.0 * j / d) for d in (4, 6) for j in range(d // 2)]) / ([1.0] * 2 + [2.0] * 3)
    np.testing.assert_allclose(plan.inv_freq.numpy(), expected, rtol=1e-15, atol=0)
