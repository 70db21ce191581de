"""The core runs with numpy alone: in a process where torch cannot be imported, `import dype_rope` works and the
schedules, plans and tables compute on numpy, equal to the float64 references; patching says it needs torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from reference_dype import frequencies

SCRIPT = r"""
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is not installed")

sys.meta_path.insert(0, NoTorch())
import json
import numpy as np
import dype_rope
from dype_rope import DyPEConfig, build_plan, rope_tables

plan = build_plan((16, 56, 56), 10000.0, np.array([1.0, 2.0, 3.0]), 0.4, DyPEConfig(), (1, 64, 64))
cos, sin = rope_tables(np.zeros((4, 3), dtype=np.float32), plan)
try:
    dype_rope.patch
except ImportError as err:
    print("patch:", err)
print(json.dumps({"torch": "torch" in sys.modules, "inv_freq": plan.inv_freq.tolist(), "cos": str(cos.dtype),
                  "shape": list(cos.shape), "cos_is_mscale": bool((cos == plan.mscale.repeat(2).astype(np.float32)).all())}))
"""


def test_core_imports_and_computes_without_torch():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.splitlines()
    assert first == "patch: torch is not installed"
    out = json.loads(last)
    assert out["torch"] is False and out["cos"] == "float32" and out["shape"] == [4, 128] and out["cos_is_mscale"]
    expected = np.concatenate([frequencies(d, 10000.0, b, s, 0.4)[0] for d, b, s in ((16, 1, 1), (56, 64, 2), (56, 64, 3))])
    np.testing.assert_allclose(out["inv_freq"], expected, rtol=1e-9, atol=0)
