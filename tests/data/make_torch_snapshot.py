"""Writes torch_snapshot.npz: torch outputs of the schedules, build_plan, plain_plan, rope_tables and the rope_formats
tables on a fixed grid of inputs, computed by the torch-only implementation that preceded the array-API core
(commit f1af7c4). tests/test_backends.py asserts that today's torch code still gives these numbers bit for bit.

It is a snapshot, not a reference: rerunning it on a later version records that version's numbers, so rerun it
only on purpose (python tests/data/make_torch_snapshot.py) and say why in the commit.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from dype_rope import SCHEDULES, DyPEConfig, build_plan, plain_plan, rope_tables
from dype_rope.rope_formats import complex_table, rotation_matrices

OUT = Path(__file__).with_name("torch_snapshot.npz")

CONFIGS = [
    ("none", True, "multiply"),
    ("pi", True, "multiply"), ("pi", False, "multiply"),
    ("ntk", True, "multiply"), ("ntk", False, "multiply"),
    ("yarn", True, "multiply"), ("yarn", False, "multiply"), ("yarn", True, "power"),
]
DIMS = (2, 16, 56)
THETAS = (256.0, 10000.0)
BASE_LENS = (8.0, 64.0)
SCALES = (0.5, 1.0, 1.7, 4.0)
TIMES = (0.0, 0.3, 1.0)
DTYPES = {"f64": torch.float64, "f32": torch.float32}


def schedule_cases():
    """(key, method, dynamic, modulation, dim, theta, base_len, scale, t, dtype): one entry per snapshot array pair."""
    for (method, dynamic, mod), dim, theta, base_len, (dname, dtype) in itertools.product(
        CONFIGS, DIMS, THETAS, BASE_LENS, DTYPES.items()
    ):
        key = f"sched/{method}/{int(dynamic)}/{mod}/{dim}/{theta:g}/{base_len:g}/{dname}"
        yield key, method, dynamic, mod, dim, theta, base_len, dtype


def grid_inputs(dtype):
    """Every (scale, t) pair of the grid at once, as a batch [n_scales, 1] x [n_times]."""
    scale = torch.tensor(SCALES, dtype=dtype)[:, None]
    t = torch.tensor(TIMES, dtype=dtype)
    return scale, t


PLAN_AXES = (16, 56, 56)
PLAN_SCALES = ((1.0, 1.0, 1.0), (1.0, 2.0, 3.0), (1.0, 0.5, 4.0))
PLAN_BASE = (1.0, 64.0, 64.0)


def positions(dtype=torch.float32):
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(5), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
    return ids.to(dtype)


def main() -> None:
    out: dict[str, np.ndarray] = {}
    for key, method, dynamic, mod, dim, theta, base_len, dtype in schedule_cases():
        cfg = DyPEConfig(method=method, dynamic=dynamic, yarn_modulation=mod)
        scale, t = grid_inputs(dtype)
        inv, ms = SCHEDULES[method](dim, theta, base_len, scale, t, cfg)
        out[key + "/inv"], out[key + "/mscale"] = inv.numpy(), ms.numpy()
    for (dname, dtype), (i, sc), (method, dynamic, mod) in itertools.product(
        DTYPES.items(), enumerate(PLAN_SCALES), CONFIGS
    ):
        cfg = DyPEConfig(method=method, dynamic=dynamic, yarn_modulation=mod)
        plan = build_plan(PLAN_AXES, 10000.0, torch.tensor(sc, dtype=dtype), torch.tensor(0.4, dtype=dtype), cfg, PLAN_BASE)
        key = f"plan/{method}/{int(dynamic)}/{mod}/{i}/{dname}"
        out[key + "/inv"], out[key + "/mscale"] = plan.inv_freq.numpy(), plan.mscale.numpy()
        out[key + "/pair_axis"] = plan.pair_axis.numpy()
        for layout in ("interleaved", "half"):
            cos, sin = rope_tables(positions(), plan, layout)
            out[f"{key}/cos/{layout}"], out[f"{key}/sin/{layout}"] = cos.numpy(), sin.numpy()
        out[key + "/rot"] = rotation_matrices(positions(), plan).numpy()
        out[key + "/cis"] = complex_table(positions(), plan).numpy()
        out[key + "/cis32"] = complex_table(positions(), plan, torch.float32).numpy()
    for dname, dtype in DTYPES.items():
        plan = plain_plan(PLAN_AXES, 10000.0, dtype=dtype)
        out[f"plain/{dname}/inv"], out[f"plain/{dname}/mscale"] = plan.inv_freq.numpy(), plan.mscale.numpy()
        # a batched plan ([B, D/2]) with float64 positions
        scales = torch.tensor(PLAN_SCALES, dtype=dtype)
        plan = build_plan(PLAN_AXES, 10000.0, scales, torch.tensor([1.0, 0.5, 0.1], dtype=dtype), DyPEConfig(), PLAN_BASE)
        cos, sin = rope_tables(positions(torch.float64), plan, "interleaved")
        out[f"batched/{dname}/cos"], out[f"batched/{dname}/sin"] = cos.numpy(), sin.numpy()
    np.savez_compressed(OUT, **out)
    print(f"{OUT.name}: {len(out)} arrays")


if __name__ == "__main__":
    main()
