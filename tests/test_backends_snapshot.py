"""Torch results of the array-API core are bit for bit those of the torch-only implementation it replaced.

tests/data/torch_snapshot.npz holds that implementation's outputs (written by tests/data/make_torch_snapshot.py
from the code before the array-API core) on a grid of methods, dims, thetas, base lengths, sizes, times and both
float dtypes; here the same inputs go through today's code and must give the same numbers exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "data"))
import make_torch_snapshot as snap  # noqa: E402

from dype_rope import SCHEDULES, DyPEConfig, build_plan, plain_plan, rope_tables  # noqa: E402
from dype_rope.rope_formats import complex_table, rotation_matrices  # noqa: E402

SNAPSHOT = np.load(snap.OUT)


def same(actual: torch.Tensor, key: str) -> None:
    expected = SNAPSHOT[key]
    got = actual.numpy()
    assert got.dtype == expected.dtype and got.shape == expected.shape, key
    assert np.array_equal(got, expected, equal_nan=True), f"{key}: max diff {np.max(np.abs(got - expected))}"


@pytest.mark.parametrize("case", list(snap.schedule_cases()), ids=lambda c: c[0])
def test_schedules_unchanged(case):
    key, method, dynamic, mod, dim, theta, base_len, dtype = case
    scale, t = snap.grid_inputs(dtype)
    inv, ms = SCHEDULES[method](dim, theta, base_len, scale, t, DyPEConfig(method=method, dynamic=dynamic,
                                                                          yarn_modulation=mod))
    same(inv, key + "/inv")
    same(ms, key + "/mscale")


@pytest.mark.parametrize("dname", list(snap.DTYPES))
def test_plans_and_tables_unchanged(dname):
    dtype = snap.DTYPES[dname]
    for i, sc in enumerate(snap.PLAN_SCALES):
        for method, dynamic, mod in snap.CONFIGS:
            cfg = DyPEConfig(method=method, dynamic=dynamic, yarn_modulation=mod)
            plan = build_plan(snap.PLAN_AXES, 10000.0, torch.tensor(sc, dtype=dtype), torch.tensor(0.4, dtype=dtype),
                              cfg, snap.PLAN_BASE)
            key = f"plan/{method}/{int(dynamic)}/{mod}/{i}/{dname}"
            same(plan.inv_freq, key + "/inv")
            same(plan.mscale, key + "/mscale")
            same(plan.pair_axis, key + "/pair_axis")
            for layout in ("interleaved", "half"):
                cos, sin = rope_tables(snap.positions(), plan, layout)
                same(cos, f"{key}/cos/{layout}")
                same(sin, f"{key}/sin/{layout}")
            same(rotation_matrices(snap.positions(), plan), key + "/rot")
            same(complex_table(snap.positions(), plan), key + "/cis")
            same(complex_table(snap.positions(), plan, torch.float32), key + "/cis32")
    plan = plain_plan(snap.PLAN_AXES, 10000.0, dtype=dtype)
    same(plan.inv_freq, f"plain/{dname}/inv")
    same(plan.mscale, f"plain/{dname}/mscale")
    plan = build_plan(snap.PLAN_AXES, 10000.0, torch.tensor(snap.PLAN_SCALES, dtype=dtype),
                      torch.tensor([1.0, 0.5, 0.1], dtype=dtype), DyPEConfig(), snap.PLAN_BASE)
    cos, sin = rope_tables(snap.positions(torch.float64), plan, "interleaved")
    same(cos, f"batched/{dname}/cos")
    same(sin, f"batched/{dname}/sin")


def test_compiled_plan_and_tables_stay_one_graph_without_warnings():
    """The namespace lookup resolves to a constant under torch.compile: no graph break, no warning."""
    import warnings

    import torch._dynamo

    def step(scales, t, pos):
        return rope_tables(pos, build_plan(snap.PLAN_AXES, 10000.0, scales, t, DyPEConfig(), snap.PLAN_BASE))

    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explained = torch._dynamo.explain(step)(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
                                                torch.tensor(0.3, dtype=torch.float64), snap.positions())
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    assert [str(w.message) for w in caught] == []
