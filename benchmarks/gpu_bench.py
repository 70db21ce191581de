"""GPU check and benchmark of the fused RoPE kernels, in one command (about 3 minutes on one H100):

    python benchmarks/gpu_bench.py            # writes the "## Kernels" section of benchmarks/RESULTS.md

1. Correctness on the GPU: every kernel against a float64 reference over dtype x layout x stride layout x
   in place, odd shapes, large angles, gradients, and torch.compile(fullgraph=True) through the triton_ops.
   Any failure stops the run before anything is timed.
2. Device copy bandwidth (a q+k sized tensor copy), the physical floor of a memory-bound op.
3. Timings at FLUX shapes (B=1, H=24, D=128, bf16; L = 512 text tokens + 64^2 / 128^2 / 256^2 image tokens,
   i.e. 1, 4 and 16 MP): median of many CUDA-event-timed runs, the L2 cache flushed before each.
   Reported per implementation: microseconds, effective GB/s (the floor's bytes: q and k read once and
   written once), percent of the copy bandwidth, speedup over the diffusers chain.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

from dype_rope import DyPEConfig, build_plan, rope_tables
from dype_rope.kernels import rms_norm_rope_qk, rope_qk, rope_qk_tables

AXES, THETA, HEADS, TEXT = (16, 56, 56), 10000.0, 24, 512
SIDES = (64, 128, 256)  # image side in tokens: L = 512 + side^2 = 4608, 16896, 66048
SWEEP_SIDE = 128
REPS, WARMUP = 100, 10
FLOOR_FACTOR = 4  # read q, read k, write q, write k

# -- inputs and float64 references -------------------------------------------------------------------------


def flux_ids(side: int, device) -> torch.Tensor:
    rows = torch.arange(side, device=device).repeat_interleave(side).float()
    cols = torch.arange(side, device=device).repeat(side).float()
    img = torch.stack([torch.zeros_like(rows), rows, cols], -1)
    return torch.cat([torch.zeros(TEXT, 3, device=device), img])


def dype_plan(side: int, device, t: float = 0.5):
    scales = torch.tensor([1.0, side / 64, side / 64], dtype=torch.float64, device=device)
    return build_plan(AXES, THETA, scales, torch.tensor(t, dtype=torch.float64, device=device), DyPEConfig(),
                      (1.0, 64.0, 64.0))


def halves(x, layout):
    return (x[..., 0::2], x[..., 1::2]) if layout == "interleaved" else x.chunk(2, -1)


def join(a, b, layout):
    return torch.stack([a, b], -1).flatten(-2) if layout == "interleaved" else torch.cat([a, b], -1)


def ref_rope(x, positions, plan, layout, sequence_dim):
    angles = positions.double()[..., plan.pair_axis] * plan.inv_freq.double()
    cos, sin = angles.cos() * plan.mscale.double(), angles.sin() * plan.mscale.double()
    cos, sin = (t.unsqueeze(1) if sequence_dim == 1 else t for t in (cos, sin))  # [L, 1, D/2] or [L, D/2]
    a, b = halves(x.double(), layout)
    return join(a * cos - b * sin, b * cos + a * sin, layout)


def check(name: str, out: torch.Tensor, ref: torch.Tensor) -> None:
    eps = torch.finfo(out.dtype).eps
    err = (out.double() - ref).abs()
    tol = eps * ref.abs() + 8 * torch.finfo(torch.float32).eps * ref.abs().max()
    if (err > tol).any():
        raise AssertionError(f"{name}: {int((err > tol).sum())} elements off, worst {err.max():.3g}")


def check_correctness(device) -> int:
    """Every variant on the GPU against float64; returns the number of checks that passed."""
    n = 0
    g = torch.Generator(device=device).manual_seed(0)
    for d, axes in ((128, AXES), (92, (16, 38, 38))):
        plan = build_plan(axes, THETA, torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64, device=device),
                          torch.tensor(0.4, dtype=torch.float64, device=device), DyPEConfig(), (1.0, 64.0, 64.0))
        positions = torch.randint(0, 1100, (217, 3), device=device, generator=g).float()
        for dtype in (torch.float32, torch.bfloat16, torch.float16) if d == 128 else (torch.bfloat16,):
            for layout in ("interleaved", "half"):
                for sequence_dim in (1, 2):
                    base = torch.randn(2, 217, 6, d, device=device, generator=g).to(dtype)
                    q = base if sequence_dim == 1 else base.transpose(1, 2)
                    k = q[:, :, :2] if sequence_dim == 1 else q[:, :2]
                    for inplace in (False, True):
                        qi, ki = (q.clone(), k.clone()) if inplace else (q, k)
                        ref_q, ref_k = (ref_rope(x, positions, plan, layout, sequence_dim) for x in (qi, ki))
                        out_q, out_k = rope_qk(qi, ki, positions, plan, layout, sequence_dim, inplace, "triton")
                        tag = f"rope D={d} {dtype} {layout} seq_dim={sequence_dim} inplace={inplace}"
                        check(tag + " q", out_q, ref_q)
                        check(tag + " k", out_k, ref_k)
                        n += 2
                        if inplace:
                            continue
                        cos, sin = rope_tables(positions, plan, layout)
                        tq, _ = rope_qk_tables(q, k, cos, sin, layout, sequence_dim, backend="triton")
                        check(tag.replace("rope", "tables") + " q", tq, ref_rope(q, positions, plan, layout, sequence_dim))
                        w = torch.rand(d, device=device, generator=g) + 0.5
                        nq, _ = rms_norm_rope_qk(q, k, w.to(dtype), w.to(dtype), positions, plan, 1e-6, layout,
                                                 sequence_dim, "triton")
                        xn = q.double() * torch.rsqrt(q.double().square().mean(-1, keepdim=True) + 1e-6) * w.to(dtype).double()
                        check(tag.replace("rope", "norm+rope") + " q", nq, ref_rope(xn, positions, plan, layout, sequence_dim))
                        n += 2
    # gradients: the conjugate rotation against float64 autograd
    plan = dype_plan(128, device)
    positions = flux_ids(16, device)
    q = torch.randn(1, positions.shape[0], 4, 128, device=device, generator=g, requires_grad=True)
    k = torch.randn_like(q, requires_grad=True)
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    out = rope_qk(q, k, positions, plan, backend="triton")
    got = torch.autograd.grad((out[0] * gq).sum() + (out[1] * gk).sum(), (q, k))
    q64, k64 = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    ref = (ref_rope(q64, positions, plan, "interleaved", 1), ref_rope(k64, positions, plan, "interleaved", 1))
    want = torch.autograd.grad((ref[0] * gq).sum() + (ref[1] * gk).sum(), (q64, k64))
    for a, b in zip(got, want):
        check("gradient", a, b)
    # torch.compile traces through the triton_ops into one graph
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("inductor")
    step = torch.compile(lambda q, k: rope_qk(q, k, positions, plan, backend="triton"), fullgraph=True, backend=counter)
    with torch.no_grad():
        compiled = step(q, k)
        eager = rope_qk(q, k, positions, plan, backend="triton")
    assert counter.frame_count == 1, "torch.compile broke the graph"
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)
    return n + 3


# -- timing ------------------------------------------------------------------------------------------------


class Timer:
    """Median of CUDA-event times over REPS runs, each after overwriting a buffer larger than the L2 cache."""

    def __init__(self, device) -> None:
        l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20)
        self.flush = torch.empty(max(4 * l2, 256 * 2**20) // 4, dtype=torch.int32, device=device)

    def __call__(self, fn: Callable[[], object]) -> float:
        for _ in range(WARMUP):
            fn()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(REPS)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(REPS)]
        for s, e in zip(starts, ends):
            self.flush.zero_()
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1e3  # microseconds


def implementations(q, k, ids, plan, device) -> dict[str, Callable[[], object]]:
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

    compiled_ref = torch.compile(lambda q, k, ids: rope_qk(q, k, ids, plan, backend="torch"), dynamic=False)
    impls = {
        "diffusers chain (FluxPosEmbed + 2x apply_rotary_emb)": diffusers_chain,
        "dype_rope triton, positions + plan": lambda: rope_qk(q, k, ids, plan, backend="triton"),
        "dype_rope triton, positions + plan, in place": lambda: rope_qk(q_in, k_in, ids, plan, inplace=True, backend="triton"),
        "dype_rope triton, cos/sin tables": lambda: rope_qk_tables(q, k, cos, sin, backend="triton"),
        "dype_rope torch reference, torch.compile": lambda: compiled_ref(q, k, ids),
        "diffusers RMSNorm x2 + chain": diffusers_norm_chain,
        "dype_rope triton RMSNorm + RoPE": lambda: rms_norm_rope_qk(q, k, norm_q.weight, norm_k.weight, ids, plan,
                                                                   1e-6, backend="triton"),
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


def copy_bandwidth(nbytes: int, timer: Timer, device) -> float:
    """GB/s of a device-to-device copy of nbytes (counting the read and the write)."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    us = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (us * 1e-6) / 1e9


def sweep_launch(q, k, ids, plan, timer: Timer) -> list[tuple[int, int, float]]:
    """Launch shapes of the positions kernel at one size: (BLOCK_H, num_warps, us)."""
    from dype_rope.kernels.rope_triton import launch_rope_qk

    qo, ko = torch.empty_like(q), torch.empty_like(k)
    rows = []
    for block_h in (4, 8, 16):
        for warps in (2, 4, 8):
            fn = lambda: launch_rope_qk(q, k, qo, ko, ids, *plan, True, 1, False, block_h=block_h, num_warps=warps)
            rows.append((block_h, warps, timer(fn)))
    return rows


# -- report ------------------------------------------------------------------------------------------------


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


OURS, NORM = "dype_rope triton, positions + plan", "dype_rope triton RMSNorm + RoPE"


def target_lines(results: dict[int, dict[str, tuple[float, float, float]]]) -> list[str]:
    """The issue's targets at the two larger sizes, from {L: {label: (us, % of copy, speedup)}}."""
    out = []
    for seq in sorted(results)[1:]:
        r = results[seq]
        peers = [label for label in r if label.startswith(("flashinfer", "liger"))]
        checks = [
            (f"q+k RoPE >= 90% of copy bandwidth ({r[OURS][1]:.0f}%)", r[OURS][1] >= 90),
            (f">= 8x the diffusers chain ({r[OURS][2]:.1f}x)", r[OURS][2] >= 8),
            (f"fused norm+RoPE >= 85% of copy bandwidth ({r[NORM][1]:.0f}%)", r[NORM][1] >= 85),
            (f"at least as fast as every peer measured ({', '.join(peers) or 'none installed'})",
             all(r[OURS][0] <= r[p][0] for p in peers)),
        ]
        out += [f"- L = {seq}: {text}: **{'met' if ok else 'NOT met'}**" for text, ok in checks]
    return out


def measure_all(device, timer: Timer) -> tuple[list[str], list[tuple[int, int, float]], list[str]]:
    """Table rows (markdown) for every size and implementation, the launch sweep, and the target lines."""
    lines, sweep, results = [], [], {}
    for side in SIDES:
        ids, plan = flux_ids(side, device), dype_plan(side, device)
        seq = ids.shape[0]
        g = torch.Generator(device=device).manual_seed(0)
        q, k = (torch.randn(1, seq, HEADS, 128, device=device, generator=g).to(torch.bfloat16) for _ in range(2))
        floor = FLOOR_FACTOR * q.numel() * q.element_size()
        copy_gbs = copy_bandwidth(2 * q.numel() * q.element_size(), timer, device)
        times: dict[str, float | str] = {}
        with torch.no_grad():
            for label, fn in implementations(q, k, ids, plan, device).items():
                try:
                    times[label] = timer(fn)
                except Exception as exc:  # a peer that rejects the shape is reported, not fatal
                    times[label] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            if side == SWEEP_SIDE:
                sweep = sweep_launch(q, k, ids, plan, timer)
        chain = times["diffusers chain (FluxPosEmbed + 2x apply_rotary_emb)"]
        norm_chain = times["diffusers RMSNorm x2 + chain"]
        block = [f"| **L = {seq}** (copy: {copy_gbs:.0f} GB/s) | | | | |"]
        for label, us in times.items():
            if isinstance(us, str):
                block.append(f"| {label} | {us} | | | |")
                continue
            gbs = floor / (us * 1e-6) / 1e9
            base = norm_chain if "RMSNorm" in label else chain
            speedup = f"{base / us:.2f}x" if isinstance(base, float) else "n/a"
            block.append(f"| {label} | {us:.1f} | {gbs:.0f} | {100 * gbs / copy_gbs:.0f}% | {speedup} |")
            results.setdefault(seq, {})[label] = (us, 100 * gbs / copy_gbs, base / us if isinstance(base, float) else 0.0)
        print("\n".join(block), flush=True)
        lines += block
    return lines, sweep, target_lines(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args()
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        print("gpu_bench.py needs a CUDA GPU (and TRITON_INTERPRET unset)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    began = datetime.datetime.now()
    print(f"{name}: checking correctness ...", flush=True)
    print(f"  {check_correctness(device)} checks passed ({(datetime.datetime.now() - began).seconds} s)", flush=True)
    lines, sweep, targets = measure_all(device, Timer(device))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([
        "## Kernels",
        "",
        f"Measured by `python benchmarks/gpu_bench.py` on **{name}**, {date}; torch {torch.__version__}.",
        f"B = 1, H = {HEADS}, D = 128, bfloat16, {TEXT} text tokens; median of {REPS} runs, L2 flushed before each.",
        "GB/s counts the floor's bytes (q and k read once, written once) whatever the implementation moves;",
        "% is of the device copy bandwidth measured at the same size; speedup is over the diffusers chain",
        "(for the RMSNorm rows: over diffusers' two RMSNorm modules followed by that chain).",
        "",
        "| implementation | us | GB/s | % of copy | speedup |",
        "|---|---|---|---|---|",
        *lines,
        "",
        f"Launch shapes of the positions kernel at L = {TEXT + SWEEP_SIDE ** 2} (BLOCK_H x num_warps: us): "
        + ", ".join(f"{b}x{w}: {us:.1f}" for b, w, us in sweep),
        "",
        "Targets:",
        *targets,
        "",
    ])
    write_section(args.out, section)
    print(f"wrote {args.out} ({(datetime.datetime.now() - began).seconds} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
