"""The report side of benchmarks/gpu_bench.py, on the CPU: a failed implementation or a failed GPU check still
gives a complete RESULTS.md section (never a KeyError after all the timing), and the targets are judged from
the numbers. The timing itself needs a GPU and is not run here."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_bench as gb  # noqa: E402

# floor 4 GB at a copy bandwidth of 4000 GB/s: 1000 us would be 100% of copy
FLOOR, COPY = 4_000_000_000, 4000.0


def size(times, copy=COPY, seq=16896) -> gb.SizeResult:
    return gb.SizeResult(seq, FLOOR, copy, dict(times))


def verdicts(lines: list[str]) -> dict[str, str]:
    return {re.sub(r" \(.*", "", line.split(": ", 1)[1]): line.rsplit(": ", 1)[1] for line in lines}


def test_targets_are_judged_from_the_numbers():
    result = size({gb.CHAIN: 9000.0, gb.OURS: 1050.0, gb.COMPILED: 1200.0, gb.NORM_CHAIN: 9500.0, gb.NORM: 1200.0,
                   "flashinfer apply_rope_pos_ids (1 axis)": 1000.0})
    lines = gb.target_lines([result])
    assert len(lines) == 4
    text = "\n".join(lines)
    assert "q+k RoPE >= 90% of copy bandwidth: 95%: **met**" in text  # 4e9 B / 1050 us = 3810 GB/s
    assert "fused norm+RoPE >= 85% of copy bandwidth: 83%: **NOT met**" in text
    assert ">= 8x the diffusers chain: 8.6x: **met**" in text
    assert "1050.0 us: **NOT met**" in text  # flashinfer's 1000 us is ahead


@pytest.mark.parametrize("broken", [gb.OURS, gb.CHAIN, gb.NORM, "liger rotary_pos_emb (half-layout tables)"])
def test_a_failed_implementation_leaves_its_targets_unmeasured(broken):
    times = {gb.CHAIN: 9000.0, gb.OURS: 1000.0, gb.COMPILED: 1100.0, gb.NORM_CHAIN: 9500.0, gb.NORM: 1100.0,
             "liger rotary_pos_emb (half-layout tables)": 1500.0}
    times[broken] = "failed: RuntimeError: shape rejected"
    lines = gb.target_lines([size(times)])
    assert len(lines) == 4 and any("not measured" in line for line in lines)
    rows = gb.table_rows(size(times))
    assert f"| {broken} | failed: RuntimeError: shape rejected | | | |" in rows
    section = gb.kernel_section("Test GPU", "2026-01-01 00:00 UTC", "Test GPU, 2026-01-01: 9 checks", None,
                                [size(times)], [], 10)
    assert "GPU check passed: Test GPU, 2026-01-01: 9 checks" in section and "Targets:" in section


def test_a_failed_copy_measurement_is_reported_not_raised():
    result = size({gb.CHAIN: 9000.0, gb.OURS: 1000.0}, copy="failed: RuntimeError: out of memory")
    assert any("not measured" in line for line in gb.target_lines([result]))
    assert "| dype_rope triton, positions + plan | 1000.0 | 4000 | n/a | 9.00x |" in gb.table_rows(result)


def test_a_failed_gpu_check_is_recorded_without_timings():
    section = gb.kernel_section("Test GPU", "2026-01-01 00:00 UTC", None, "AssertionError: rope_qk D=128 off",
                                [], [], 10)
    assert "GPU check FAILED" in section and "AssertionError: rope_qk D=128 off" in section
    assert "GPU check passed" not in section and "| implementation |" not in section


def test_sweep_names_the_fastest_shape():
    lines = gb.sweep_line([(8, 4, 40.0), (32, 8, 35.5), (16, 8, "failed: OutOfResources: shared memory")])
    assert "32x8: 35.5" in lines[-1] and "16x8: failed" in lines[-1]
    assert "Fastest: BLOCK_H=32, num_warps=8." in lines[-1]


def test_write_section_replaces_only_the_kernels_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Kernels\n\nold numbers\n\n## Model-level overhead\n\nkept\n")
    gb.write_section(path, "## Kernels\n\nnew numbers\n")
    text = path.read_text()
    assert "new numbers" in text and "old numbers" not in text and "## Model-level overhead\n\nkept" in text


def test_without_a_gpu_the_script_refuses_and_writes_nothing(tmp_path):
    out = tmp_path / "RESULTS.md"
    assert gb.main(["--out", str(out)]) == 2
    assert not out.exists()
