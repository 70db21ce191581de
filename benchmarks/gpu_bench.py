"""GPU check and benchmark of the fused RoPE kernels, in one command (meant to take under 5 minutes on one H100 /
H200, under 2 with --quick; both end by writing benchmarks/RESULTS.md):

    python benchmarks/gpu_bench.py [--quick]     # writes the "## Kernels" section of benchmarks/RESULTS.md

1. Correctness on the GPU (benchmarks/gpu_check.py): every kernel x dtype x layout x stride layout x in place
   against float64 and the torch path, positions up to 65535, gradients, torch.compile, and every family's
   fused processors against its torch backend. A failure stops the run before anything is timed; RESULTS.md
   then records the failure. When it passes, RESULTS.md records "GPU check passed: <card, date, check>" and
   the script prints that record: put it into GPU_CHECK_PASSED in kernels/verified.py so that
   backend="auto" prefers the kernels on CUDA (only then; explicit backend="triton" works either way).
2. Device copy bandwidth (a q+k sized copy), the physical floor of a memory-bound op.
3. Timings at FLUX shapes (B=1, H=24, D=128, bf16; L = 512 text tokens + 64^2 / 128^2 / 256^2 image tokens,
   i.e. 1, 4 and 16 MP). Every implementation is compiled and warmed at every size first. Then each is
   captured in a CUDA graph of back-to-back calls (the host's ~50-90 us launch path would otherwise exceed a
   ~35 us kernel at small L), cycling through enough copies of q and k that no call finds its inputs in L2;
   the L2 is flushed by reading a larger buffer before each replay (a zero_() flush would leave dirty lines
   that get written back inside the timed region). Median over replays, per call.
   Reported per implementation: microseconds, effective GB/s (the floor's bytes: q and k read once and
   written once), percent of the copy bandwidth, speedup over the diffusers chain. A failing implementation
   is reported as failed; the targets it decides are then "not measured", never a crash.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from dype_rope import DyPEConfig, build_plan, rope_tables
from dype_rope.kernels import rms_norm_rope_qk, rope_qk, rope_qk_tables

AXES, THETA, HEADS, HEAD_DIM, TEXT = (16, 56, 56), 10000.0, 24, 128, 512
SIDES = (64, 128, 256)  # image side in tokens: L = 512 + side^2 = 4608, 16896, 66048
SWEEP_SIDE = 128
FLOOR_FACTOR = 4  # read q, read k, write q, write k
CALLS_PER_REPLAY = 8

CHAIN = "diffusers chain (FluxPosEmbed + 2x apply_rotary_emb)"
NORM_CHAIN = "diffusers RMSNorm x2 + chain"
OURS = "dype_rope triton, positions + plan"
NORM = "dype_rope triton RMSNorm + RoPE"
COMPILED = "dype_rope torch reference, torch.compile"
OWN = (OURS, OURS + ", in place", "dype_rope triton, cos/sin tables", NORM)


@dataclass
class SizeResult:
    """What was measured at one sequence length: microseconds per label, or why a label has no number."""

    seq: int
    floor_bytes: int
    copy_gbs: float | str = "not measured"
    times: dict[str, float | str] = field(default_factory=dict)


# -- inputs ------------------------------------------------------------------------------------------------
def flux_ids(side: int, device) -> torch.Tensor:
    rows = torch.arange(side, device=device).repeat_interleave(side).float()
    cols = torch.arange(side, device=device).repeat(side).float()
    img = torch.stack([torch.zeros_like(rows), rows, cols], -1)
    return torch.cat([torch.zeros(TEXT, 3, device=device), img])


def dype_plan(side: int, device, t: float = 0.5):
    scales = torch.tensor([1.0, side / 64, side / 64], dtype=torch.float64, device=device)
    return build_plan(AXES, THETA, scales, torch.tensor(t, dtype=torch.float64, device=device), DyPEConfig(),
                      (1.0, 64.0, 64.0))


def implementations(q, k, ids, plan, compiled_ref, device) -> dict[str, Callable[[], object]]:
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    embed = FluxPosEmbed(int(THETA), list(AXES))
    norm_q, norm_k = (torch.nn.RMSNorm(q.shape[-1], eps=1e-6, device=device, dtype=q.dtype) for _ in range(2))
    cos, sin = rope_tables(ids, plan)
    q_in, k_in = q.clone(), k.clone()

    def diffusers_chain():
        freqs = embed(ids)
        return apply_rotary_emb(q, freqs, sequence_dim=1), apply_rotary_emb(k, freqs, sequence_dim=1)

    def diffusers_norm_chain():
        freqs = embed(ids)
        return apply_rotary_emb(norm_q(q), freqs, sequence_dim=1), apply_rotary_emb(norm_k(k), freqs, sequence_dim=1)

    impls = {
        CHAIN: diffusers_chain,
        OURS: lambda: rope_qk(q, k, ids, plan, backend="triton"),
        OURS + ", in place": lambda: rope_qk(q_in, k_in, ids, plan, inplace=True, backend="triton"),
        "dype_rope triton, cos/sin tables": lambda: rope_qk_tables(q, k, cos, sin, backend="triton"),
        COMPILED: lambda: compiled_ref(q, k, ids),
        NORM_CHAIN: diffusers_norm_chain,
        NORM: lambda: rms_norm_rope_qk(q, k, norm_q.weight, norm_k.weight, ids, plan, 1e-6, backend="triton"),
    }
    impls.update(peers(q, k, *rope_tables(ids, plan, "half")))
    return impls


def peers(q, k, cos, sin) -> dict[str, Callable[[], object]]:
    """Other libraries' RoPE kernels when installed. Neither knows multi-axis positions: they rotate by one
    position axis (FlashInfer) or by half-layout tables (Liger), moving the same bytes."""
    out = {}
    try:
        import flashinfer

        pos = torch.arange(q.shape[1], device=q.device, dtype=torch.int32)
        q3, k3 = q[0], k[0]  # [L, H, D]
        out["flashinfer apply_rope_pos_ids (1 axis)"] = lambda: flashinfer.rope.apply_rope_pos_ids(
            q3, k3, pos, interleave=True, rope_theta=THETA)
    except ImportError:
        pass
    try:
        from liger_kernel.transformers.rope import liger_rotary_pos_emb

        qt, kt = q.transpose(1, 2), k.transpose(1, 2)  # Liger takes [B, H, L, D]
        out["liger rotary_pos_emb (half-layout tables)"] = lambda: liger_rotary_pos_emb(qt, kt, cos[None], sin[None])
    except ImportError:
        pass
    return out


# -- timing ------------------------------------------------------------------------------------------------
class Timer:
    """Per-call microseconds of CUDA graphs of back-to-back calls, the L2 flushed by a read before each replay."""

    def __init__(self, device, reps: int) -> None:
        self.l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20)
        self.flush_buffer = torch.empty(max(4 * self.l2, 256 * 2**20) // 4, dtype=torch.int32, device=device)
        self.reps = reps

    def copies(self, bytes_per_copy: int) -> int:
        """Copies of the inputs to cycle through so that together they span three L2 caches."""
        return max(1, math.ceil(3 * self.l2 / bytes_per_copy))

    def flush(self) -> None:
        torch.sum(self.flush_buffer, dtype=torch.int64)  # reads only: nothing dirty is left to write back

    def prepare(self, fns: list[Callable[[], object]]) -> tuple[Callable[[], None], int]:
        """(run, calls): a CUDA graph replay (or, if capture fails, eager launches) of back-to-back calls."""
        calls = len(fns) * math.ceil(CALLS_PER_REPLAY / len(fns))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for fn in fns:  # warm (compile, autotune) outside the capture
                fn()
        torch.cuda.current_stream().wait_stream(side)
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph):
                for i in range(calls):
                    fns[i % len(fns)]()
            return graph.replay, calls
        except Exception:  # an implementation that cannot be captured is timed as eager back-to-back launches
            torch.cuda.synchronize()

            def eager():
                with torch.no_grad():
                    for i in range(calls):
                        fns[i % len(fns)]()
            return eager, calls

    def __call__(self, run: Callable[[], None], calls: int) -> float:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(self.reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(self.reps)]
        run()
        for s, e in zip(starts, ends):
            self.flush()  # enqueued first: the host queues the replay while the GPU is still reading
            s.record()
            run()
            e.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1e3 / calls


def copy_bandwidth(nbytes: int, timer: Timer, device) -> float:
    """GB/s of a device-to-device copy of nbytes (counting the read and the write)."""
    pairs = [(torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device),
              torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)) for _ in range(timer.copies(2 * nbytes))]
    us = timer(*timer.prepare([lambda s=s, d=d: d.copy_(s) for s, d in pairs]))
    return 2 * nbytes / (us * 1e-6) / 1e9


def failure(exc: Exception) -> str:
    return f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:80]}"


def measure_all(device, timer: Timer, sweep: bool) -> tuple[list[SizeResult], list[tuple[int, int, float | str]]]:
    """Every implementation at every size (all compiled and captured before anything is timed), and the launch
    sweep of the positions kernel. Failures are recorded as strings, never raised."""
    compiled_ref = torch.compile(lambda q, k, ids, plan: rope_qk(q, k, ids, plan, backend="torch"), dynamic=False)
    prepared, results = {}, []
    for side in SIDES:
        ids, plan = flux_ids(side, device), dype_plan(side, device)
        seq = ids.shape[0]
        g = torch.Generator(device=device).manual_seed(0)
        shape = (1, seq, HEADS, HEAD_DIM)
        result = SizeResult(seq, FLOOR_FACTOR * math.prod(shape) * 2)
        results.append(result)
        try:
            result.copy_gbs = copy_bandwidth(result.floor_bytes // 2, timer, device)
        except Exception as exc:
            result.copy_gbs = failure(exc)
        sets = []
        for _ in range(timer.copies(result.floor_bytes)):
            q, k = (torch.randn(shape, device=device, generator=g).to(torch.bfloat16) for _ in range(2))
            sets.append(implementations(q, k, ids, plan, lambda q, k, ids, plan=plan: compiled_ref(q, k, ids, plan),
                                        device))
        for label in sets[0]:
            try:
                prepared[seq, label] = timer.prepare([impls[label] for impls in sets])
            except Exception as exc:
                result.times[label] = failure(exc)
        print(f"L = {seq}: compiled and captured", flush=True)
    for result in results:
        for label, (run, calls) in [(lb, p) for (s, lb), p in prepared.items() if s == result.seq]:
            try:
                result.times[label] = timer(run, calls)
            except Exception as exc:
                result.times[label] = failure(exc)
    prepared.clear()
    return results, sweep_launch(device, timer) if sweep else []


def sweep_launch(device, timer: Timer) -> list[tuple[int, int, float | str]]:
    """Launch shapes of the positions kernel at L = 512 + SWEEP_SIDE^2: (BLOCK_H, num_warps, us)."""
    from dype_rope.kernels.rope_triton import launch_rope_qk

    ids, plan = flux_ids(SWEEP_SIDE, device), dype_plan(SWEEP_SIDE, device)
    shape = (1, ids.shape[0], HEADS, HEAD_DIM)
    sets = [[torch.randn(shape, device=device).to(torch.bfloat16) for _ in range(4)]
            for _ in range(timer.copies(FLOOR_FACTOR * math.prod(shape) * 2))]
    rows = []
    for block_h in (8, 16, 32):
        for warps in (2, 4, 8, 16):
            fns = [lambda s=s, b=block_h, w=warps: launch_rope_qk(*s, ids, *plan, True, 1, False, block_h=b,
                                                                   num_warps=w) for s in sets]
            try:
                rows.append((block_h, warps, timer(*timer.prepare(fns))))
            except Exception as exc:
                rows.append((block_h, warps, failure(exc)))
    return rows


# -- report (pure functions: tested on the CPU by tests/test_kernels_gpu_bench.py) --------------------------
def table_rows(result: SizeResult) -> list[str]:
    copy = f"{result.copy_gbs:.0f} GB/s" if isinstance(result.copy_gbs, float) else result.copy_gbs
    rows = [f"| **L = {result.seq}** (copy: {copy}) | | | | |"]
    for label, us in result.times.items():
        if isinstance(us, str):
            rows.append(f"| {label} | {us} | | | |")
            continue
        gbs = result.floor_bytes / (us * 1e-6) / 1e9
        pct = f"{100 * gbs / result.copy_gbs:.0f}%" if isinstance(result.copy_gbs, float) else "n/a"
        base = result.times.get(NORM_CHAIN if "RMSNorm" in label else CHAIN)
        speedup = f"{base / us:.2f}x" if isinstance(base, float) else "n/a"
        rows.append(f"| {label} | {us:.1f} | {gbs:.0f} | {pct} | {speedup} |")
    return rows


def target_lines(results: list[SizeResult]) -> list[str]:
    """The targets at every size: met, NOT met, or not measured (with the reason) when a number is missing."""
    out = []
    for r in results:
        t = r.times

        def number(label):
            return t.get(label) if isinstance(t.get(label), float) else None

        def pct(label):
            us = number(label)
            if us is None or not isinstance(r.copy_gbs, float):
                return None
            return 100 * r.floor_bytes / (us * 1e-6) / 1e9 / r.copy_gbs

        ours, norm, chain = number(OURS), number(NORM), number(CHAIN)
        rivals = [label for label in t if label not in OWN and label != NORM_CHAIN]
        checks = [
            ("q+k RoPE >= 90% of copy bandwidth", pct(OURS), lambda v: f"{v:.0f}%", lambda v: v >= 90),
            ("fused norm+RoPE >= 85% of copy bandwidth", pct(NORM), lambda v: f"{v:.0f}%", lambda v: v >= 85),
            (">= 8x the diffusers chain", chain / ours if ours and chain else None, lambda v: f"{v:.1f}x",
             lambda v: v >= 8),
            (f"ahead of every other implementation measured ({', '.join(rivals) or 'none'})",
             ours if ours and all(number(x) for x in rivals) else None, lambda v: f"{v:.1f} us",
             lambda v: all(v < number(x) for x in rivals)),
        ]
        for text, value, show, ok in checks:
            verdict = "not measured (an implementation it needs failed)" if value is None else \
                f"{show(value)}: **{'met' if ok(value) else 'NOT met'}**"
            out.append(f"- L = {r.seq}: {text}: {verdict}")
    return out


def sweep_line(sweep: list[tuple[int, int, float | str]]) -> list[str]:
    if not sweep:
        return []
    timed = [(us, b, w) for b, w, us in sweep if isinstance(us, float)]
    shapes = ", ".join(f"{b}x{w}: {us:.1f}" if isinstance(us, float) else f"{b}x{w}: {us}" for b, w, us in sweep)
    best = f" Fastest: BLOCK_H={min(timed)[1]}, num_warps={min(timed)[2]}." if timed else ""
    return ["", f"Launch shapes of the positions kernel at L = {TEXT + SWEEP_SIDE ** 2} (BLOCK_H x num_warps: us): "
            f"{shapes}.{best}"]


def kernel_section(card: str, date: str, record: str | None, check_failure: str | None,
                   results: list[SizeResult], sweep, reps: int) -> str:
    head = ["## Kernels", "",
            f"Measured by `python benchmarks/gpu_bench.py` on **{card}**, {date}; torch {torch.__version__}.", ""]
    if record is None:
        return "\n".join(head + [f"GPU check FAILED, nothing was timed: {check_failure}",
                                 "backend=\"auto\" keeps to the torch path (kernels/verified.py).", ""])
    lines = head + [
        f"GPU check passed: {record}",
        "",
        f"B = 1, H = {HEADS}, D = {HEAD_DIM}, bfloat16, {TEXT} text tokens; CUDA graphs of {CALLS_PER_REPLAY}+ "
        f"back-to-back calls over copies of q and k spanning 3x the L2, L2 flushed by a read before each "
        f"replay, median of {reps} replays, per call.",
        "GB/s counts the floor's bytes (q and k read once, written once) whatever the implementation moves;",
        "% is of the device copy bandwidth measured at the same size; speedup is over the diffusers chain",
        "(for the RMSNorm rows: over diffusers' two RMSNorm modules followed by that chain).",
        "",
        "| implementation | us | GB/s | % of copy | speedup |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        lines += table_rows(result)
    lines += sweep_line(sweep) + ["", "Targets:", *target_lines(results), ""]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the "## Kernels" section of RESULTS.md, leaving every other section as it is."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find("## Kernels")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + 1)
        text = text[:start] + section + ("" if nxt < 0 else "\n" + text[nxt + 1:])
    path.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--quick", action="store_true", help="fewer replays, no launch sweep (under 2 minutes)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        print("gpu_bench.py needs a CUDA GPU (and TRITON_INTERPRET unset)", file=sys.stderr)
        return 2
    import triton

    from gpu_check import check_correctness

    device = torch.device("cuda")
    card = torch.cuda.get_device_name(device)
    began = datetime.datetime.now()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reps = 10 if args.quick else 50
    record = check_failure = None
    print(f"{card}: checking correctness ...", flush=True)
    try:
        passed = check_correctness(device, quick=args.quick)
        record = (f"{card}, {date}, torch {torch.__version__}, triton {triton.__version__}: {passed} checks of "
                  f"benchmarks/gpu_check.py{' (quick)' if args.quick else ''}")
        print(f"  {passed} checks passed ({(datetime.datetime.now() - began).seconds} s)", flush=True)
    except Exception as exc:  # recorded in RESULTS.md; nothing is timed
        check_failure = f"{type(exc).__name__}: {exc}"
        print(f"  FAILED: {check_failure}", flush=True)
    results, sweep = ([], [])
    if record is not None:
        results, sweep = measure_all(device, Timer(device, reps), sweep=not args.quick)
    write_section(args.out, kernel_section(card, date, record, check_failure, results, sweep, reps))
    print(f"wrote {args.out} ({(datetime.datetime.now() - began).seconds} s in all)")
    if record is not None and not args.quick:
        print(f'To let backend="auto" use the kernels, set in kernels/verified.py:\nGPU_CHECK_PASSED = "{record}"')
    return 0 if record is not None else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
