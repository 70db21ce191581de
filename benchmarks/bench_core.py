"""Eager cost of the array-API core on torch against the torch-only implementation it replaced.

    python benchmarks/bench_core.py                       # against f1af7c4 (the last torch-only core)
    python benchmarks/bench_core.py --baseline REV --rounds 9 --write-results

The baseline's dype_rope/ is taken from git (git archive REV) into a temporary folder; each round runs one
process per version, alternating, so that both see the same machine load. Each process times, per call, on the
CPU with one thread: a Dy-YaRN schedule on one FLUX axis, build_plan for FLUX's axes (16/56/56) in float64, and
build_plan + rope_tables for a 64 x 64 token image. The figure per version is the best of its rounds (noise on
a shared machine only adds time). Goal: current / baseline <= 1.05.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import timeit
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Array-API core on torch (eager)"
GOAL = 1.05


def worker(number: int) -> dict[str, float]:
    """Microseconds per call of each case, in the dype_rope this process imports."""
    import torch

    from dype_rope import SCHEDULES, DyPEConfig, build_plan, rope_tables

    torch.set_num_threads(1)
    f64 = torch.float64
    cfg = DyPEConfig()
    scale, t = torch.tensor(2.0, dtype=f64), torch.tensor(0.4, dtype=f64)
    scales = torch.tensor([1.0, 2.0, 3.0], dtype=f64)
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
    base = (1.0, 64.0, 64.0)
    cases = {
        "yarn schedule, one axis": lambda: SCHEDULES["yarn"](56, 10000.0, 64.0, scale, t, cfg),
        "build_plan, FLUX axes": lambda: build_plan((16, 56, 56), 10000.0, scales, t, cfg, base),
        "build_plan + rope_tables, 4096 tokens": lambda: rope_tables(ids, build_plan((16, 56, 56), 10000.0, scales,
                                                                                       t, cfg, base)),
    }
    out = {}
    for name, fn in cases.items():
        fn()
        n = max(1, number // 20) if "tokens" in name else number
        out[name] = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
    return out


def run_version(path: Path, number: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(path), OMP_NUM_THREADS="1")
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_core, dype_rope; "
            f"assert dype_rope.__file__.startswith({str(path)!r}), dype_rope.__file__; "
            f"print(json.dumps(bench_core.worker({number})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=path, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def extract(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "dype_rope"], capture_output=True, check=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def compare(baseline: str, rounds: int, number: int) -> tuple[dict, dict]:
    best: dict[str, dict[str, float]] = {"baseline": {}, "current": {}}
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"baseline": extract(baseline, Path(tmp)), "current": ROOT}
        for _ in range(rounds):
            for label, path in versions.items():
                for case, us in run_version(path, number).items():
                    best[label][case] = min(us, best[label].get(case, float("inf")))
    return best["baseline"], best["current"]


def table(baseline_rev: str, base: dict, cur: dict) -> str:
    import torch

    lines = [
        SECTION,
        "",
        f"CPU ({platform.processor() or platform.machine()}, 1 thread), torch {torch.__version__}, "
        f"{datetime.date.today()}: `python benchmarks/bench_core.py` (best of its rounds, alternating processes). "
        f"Baseline: the torch-only core of {baseline_rev}. Goal: <= {GOAL:.2f}x.",
        "",
        "| case | torch-only (us) | array-API core (us) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for case in base:
        lines.append(f"| {case} | {base[case]:.1f} | {cur[case]:.1f} | {cur[case] / base[case]:.3f}x |")
    return "\n".join(lines) + "\n"


def write_results(text: str) -> None:
    old = RESULTS.read_text()
    pattern = re.compile(re.escape(SECTION) + r"\n.*?(?=\n## |\Z)", re.S)
    new = pattern.sub(lambda _: text.rstrip("\n"), old) if SECTION in old else old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new if new.endswith("\n") else new + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="f1af7c4")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=200, help="calls per timing")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    base, cur = compare(args.baseline, args.rounds, args.number)
    text = table(args.baseline, base, cur)
    print(text)
    if args.write_results:
        write_results(text)


if __name__ == "__main__":
    main()
