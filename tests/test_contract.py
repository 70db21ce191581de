"""The contract every supported family keeps, checked on every row of the family table (tests/families/):

- at or below the base grid the patched model is the stock one, bit for bit, outputs and tables;
- beyond it the tables the model sees are the DyPE schedule (tests/reference_dype.py: float64, the paper's
  constants) on the family's own position layout, for every method and aspect, rows and columns kept apart;
- t is read from the model's own timestep argument as the family's pipeline passes it, step by step;
- the patched model compiles into one graph over the sampling steps (into as many as the stock one where that
  cannot be one graph), stays finite at 4x the base grid, and remove() restores it bit for bit;
- the patched encoding refuses calls from outside the model's forward, and context-parallel hooks on it carry over;
- with backend="triton" the fused kernels give what backend="torch" gives (tests/test_fused_contract.py).

A family's own test file holds only what no other family has.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch.utils._pytree import tree_leaves

import dype_rope
from families import FAMILIES
from families.row import assert_same_state, encoding_calls, state_of

METHODS = ("yarn", "ntk", "pi")
ASPECTS = ("per-axis", "isotropic")
# Dy-PI with kappa = t: every pair's angle is omega / s ** t, so the tables pin t to ~1e-6 at s = 2.
TIME_PROBE = dict(method="pi", lambda_s=1.0, lambda_t=1.0)
TIME_PROBE_REFERENCE = dict(method="pi", lambdas=(1.0, 1.0))
TIMES = (1.0, 0.375, 0.0)  # exact in float32, also as 1 - t and as 1000 t: every time convention passes them exactly

every_family = pytest.mark.parametrize("row", FAMILIES, ids=lambda r: r.name)


def scaled(row, k: int) -> tuple[int, ...]:
    """k times the row's base grid (on video, with its frames in front)."""
    return (*row.lead, *(k * b for b in row.base))


def beyond(row) -> tuple[int, ...]:
    """A grid beyond the base on both axes at which the stock model runs too."""
    return row.beyond or scaled(row, 2)


def conds(row) -> list:
    return [None] if row.cond is None else [None, row.cond]


def recorded(row, model, x):
    """(output, [(args, output)] of every call of the position encoding)."""
    out = []
    calls = encoding_calls(model, row.encoding, lambda: out.append(row.run(model, x)))
    return out[0], calls


def assert_tables_close(got, want, atol, msg=""):
    assert len(got) == len(want), msg
    for g, w in zip(got, want):
        assert g.shape == w.shape, msg
        torch.testing.assert_close(g, w, rtol=0, atol=atol, msg=lambda m: f"{msg}: {m}")


@pytest.fixture(scope="module")
def models():
    """One tiny model per family, shared by the tests that patch it: each of them checks it comes back stock."""
    return {}


def model_of(models, row):
    if row.name not in models:
        models[row.name] = row.build()
    return models[row.name]


@every_family
def test_detected_with_its_default_and_a_given_non_square_base_grid(row, models):
    model = model_of(models, row)
    with dype_rope.patch(model) as handle:
        assert handle.adapter.name == row.adapter and handle.base_grid == row.default_base
    with dype_rope.patch(model, base_grid=row.base) as handle:
        assert handle.base_grid == row.base
    assert not dype_rope.is_patched(model)


BELOW = [(row, grid, base) for row in FAMILIES for grid, base in row.below]


def tensors(calls) -> list:
    return [leaf for leaf in tree_leaves([out for _, out in calls]) if torch.is_tensor(leaf)]


@pytest.mark.parametrize("row, grid, base", BELOW, ids=[f"{r.name}-{g}-{b}" for r, g, b in BELOW])
def test_at_or_below_the_base_grid_outputs_and_tables_are_stock(row, grid, base, models):
    """Whatever the method, aspect, time or conditioning image (which may be larger than the base grid)."""
    model = model_of(models, row)
    settings = [(method, "per-axis") for method in METHODS] + [("yarn", "isotropic")]
    for cond in conds(row) if (grid, base) == row.below[0] else [None]:
        xs = [row.inputs(grid, t, cond=cond) for t in (1.0, 0.4)]
        stock = [recorded(row, model, x) for x in xs]
        for method, aspect in settings:
            with dype_rope.patch(model, method=method, aspect=aspect, base_grid=base):
                patched = [recorded(row, model, x) for x in xs]
            for (ref, ref_calls), (out, calls) in zip(stock, patched):
                assert torch.equal(out, ref), (method, aspect, cond)
                ref_tables, tables = tensors(ref_calls), tensors(calls)
                assert len(ref_tables) == len(tables) > 0
                for a, b in zip(ref_tables, tables):
                    assert a.dtype == b.dtype and torch.equal(a, b), (method, aspect, cond)


@pytest.mark.parametrize("row", [r for r in FAMILIES if r.none_is_stock], ids=lambda r: r.name)
def test_method_none_is_stock_beyond_the_base_grid(row, models):
    model = model_of(models, row)
    x = row.inputs(beyond(row), 0.6)
    ref = row.run(model, x)
    with dype_rope.patch(model, method="none", base_grid=row.base):
        assert torch.equal(row.run(model, x), ref)


@pytest.mark.parametrize("aspect", ASPECTS)
@pytest.mark.parametrize("method", METHODS)
@every_family
def test_tables_follow_the_schedule_on_the_family_layout(row, method, aspect, models):
    """The base grid and the image are non-square with different ratios: swapped rows and columns fail."""
    model = model_of(models, row)
    for cond in conds(row) if method == "yarn" else [None]:  # which tokens set the scale does not depend on it
        with dype_rope.patch(model, method=method, aspect=aspect, base_grid=row.base):
            seen = {t: recorded(row, model, row.inputs(row.above, t, cond=cond))[1] for t in TIMES}
        for t, calls in seen.items():
            got = row.layout.seen(calls)
            want = row.layout.expected(calls, row.above, row.base, t, aspect, cond, method=method)
            assert_tables_close(got, want, row.layout.tol, f"t={t} cond={cond}")
            if t > 0:  # not vacuous: every Dy- schedule is plain only at t = 0
                plain = row.layout.expected(calls, row.above, row.base, t, aspect, cond, method="none")
                assert max((g - p).abs().max() for g, p in zip(got, plain)) > 1e-3


SAMPLERS = [(row, sampler) for row in FAMILIES for sampler in row.samplers]


@pytest.mark.parametrize("row, sampler", SAMPLERS, ids=[f"{r.name}-{s.name}" for r, s in SAMPLERS])
def test_t_follows_the_family_sampler(row, sampler, models):
    """Each step's tables are the schedule at the scheduler's own sigma, the timestep passed as the pipeline
    passes it (sigma, timestep, 1 - timestep / 1000 ...): a wrong scale or direction of time fails."""
    timesteps, sigmas = sampler.steps()
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    assert len(timesteps) == len(sigmas) and sigmas[0] >= 0.999 and sigmas[-1] < 0.3 and (sigmas.diff() < 0).all()
    model, grid = model_of(models, row), beyond(row)
    with dype_rope.patch(model, base_grid=row.base, **TIME_PROBE):
        for timestep, sigma in zip(timesteps, sigmas.tolist()):
            _, calls = recorded(row, model, row.inputs_at(grid, timestep))
            want = row.layout.expected(calls, grid, row.base, sigma, "per-axis", None, **TIME_PROBE_REFERENCE)
            assert_tables_close(row.layout.seen(calls), want, max(row.layout.tol, 1e-5), f"sigma={sigma}")


@every_family
def test_compiles_into_one_graph_over_the_sampling_steps(row, models):
    model, grid = model_of(models, row), beyond(row)
    timesteps = row.samplers[0].steps()[0][:10]  # t changes at every step: a recompilation on t shows at once
    stock_frames = 1
    if not row.fullgraph:  # the stock model breaks its graph itself: DyPE must add no graph and no recompilation
        torch._dynamo.reset()
        counter = CompileCounter()
        torch.compile(model, backend=counter)(**row.inputs_at(grid, timesteps[0]))
        stock_frames = counter.frame_count
    torch._dynamo.reset()
    counter = CompileCounter()
    with dype_rope.patch(model, base_grid=row.base):
        compiled = torch.compile(model, backend=counter, fullgraph=row.fullgraph)
        for timestep in timesteps:
            x = row.inputs_at(grid, timestep)
            with torch.no_grad():
                got = row.output(compiled(**x))
        eager = row.run(model, x)
    torch._dynamo.reset()
    assert counter.frame_count == stock_frames
    torch.testing.assert_close(got, eager, rtol=1e-6, atol=1e-6)


@every_family
def test_four_times_the_base_grid_stays_finite(row, models):
    model = model_of(models, row)
    with dype_rope.patch(model, base_grid=row.base):
        out = row.run(model, row.inputs(row.four_x or scaled(row, 4), 1.0))
    assert torch.isfinite(out).all()


@every_family
def test_remove_restores_the_model_bit_for_bit(row):
    model = row.build()
    before, encoding = state_of(model), getattr(model, row.encoding)
    x = row.inputs(beyond(row), 0.6)
    ref = row.run(model, x)
    handle = dype_rope.patch(model, base_grid=row.base)
    assert dype_rope.is_patched(model) and handle.active and handle.model is model
    assert [n for n, _ in model.named_modules()] == before["names"]  # the encoding keeps its name
    assert not torch.equal(row.run(model, x), ref)
    handle.remove()
    assert not dype_rope.is_patched(model) and not handle.active
    assert getattr(model, row.encoding) is encoding
    assert_same_state(before, state_of(model))
    assert torch.equal(row.run(model, x), ref)
    handle.remove()  # idempotent
    with pytest.raises(ValueError, match="not patched"):
        dype_rope.unpatch(model)
    dype_rope.patch(model, base_grid=row.base)
    dype_rope.unpatch(model)
    assert torch.equal(row.run(model, x), ref)


@pytest.mark.parametrize("row", [r for r in FAMILIES if r.direct_call], ids=lambda r: r.name)
def test_the_encoding_refuses_calls_outside_the_model(row, models):
    """Also right after a forward: the call's state does not outlive the call."""
    model = model_of(models, row)
    with dype_rope.patch(model, base_grid=row.base):
        row.run(model, row.inputs(beyond(row), 0.5))
        with pytest.raises(RuntimeError, match="outside the model"):
            getattr(model, row.encoding)(*row.direct_call())


CP = [(row, backend) for row in FAMILIES if row.cp_hooks for backend in ("torch", "triton")[: 2 if row.fused else 1]]


@pytest.mark.parametrize("row, backend", CP, ids=[f"{r.name}-{b}" for r, b in CP])
def test_context_parallel_hooks_on_the_encoding_are_carried_both_ways(row, backend):
    """diffusers' split hook on the encoding (installed by enable_parallelism, before or after the patch) shards
    what the replacement returns as well: it moves to the replacement and back to the original on remove()."""
    from diffusers.hooks.context_parallel import ContextParallelSplitHook
    from diffusers.hooks.hooks import HookRegistry

    model = row.build()
    name = f"cp_input---{row.encoding}"
    split = ContextParallelSplitHook(type(model)._cp_plan[row.encoding], parallel_config=None)
    original = getattr(model, row.encoding)
    HookRegistry.check_if_exists_or_initialize(original).register_hook(split, name)
    with dype_rope.patch(model, base_grid=row.base, backend=backend):
        replacement = getattr(model, row.encoding)
        assert replacement is not original and model.get_submodule(row.encoding) is replacement
        carried = getattr(model, row.encoding)._diffusers_hook.hooks
        assert list(carried) == [name] and isinstance(carried[name], ContextParallelSplitHook)
    assert getattr(model, row.encoding) is original and original._diffusers_hook.hooks == {name: split}
