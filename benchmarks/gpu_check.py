"""Correctness of the fused kernels on a real GPU: the check that clears backend="auto" (kernels/verified.py).

Run by benchmarks/gpu_bench.py before anything is timed. Every case compares the compiled kernels with float64
references written from the definitions (tests/kernel_reference.py) and with dype_rope's torch path:

- rope_qk, rope_qk_tables and rms_norm_rope_qk for every dtype (float32, bfloat16, float16) x layout
  (interleaved, half) x stride layout ([B, L, H, D] and the non-contiguous [B, H, L, D] view of it, k a slice of
  q's heads) x out of place / in place, at head dims 128 and 92, positions up to 65535;
- batched plans and positions, both rotation directions, gradients of all three against float64 autograd;
- torch.compile(fullgraph=True) through the triton_ops;
- every family with a fused path (FLUX, FLUX.2, Qwen-Image, Wan) patched with backend="triton" against the same
  model patched with backend="torch", in every dtype.
A failing case raises AssertionError naming it. With quick=True (gpu_bench.py --quick) head dim 92 is checked in
bfloat16 only; the record of a quick check says so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kernel_reference import (  # noqa: E402
    F64, KERNEL_DTYPES, assert_close_to_ref, batched_plan, dype_plan, make_qk, ref_rms_norm, ref_rope,
    ref_rope_tables,
)

import dype_rope  # noqa: E402
from dype_rope import rope_tables  # noqa: E402
from dype_rope.kernels import rms_norm_rope_qk, rope_qk, rope_qk_tables  # noqa: E402

LAYOUTS = ("interleaved", "half")
MAX_POSITION = 65535


class Checks:
    """Counts the cases that passed; the first failure raises with the case's name."""

    def __init__(self) -> None:
        self.passed = 0

    def close(self, name: str, out: torch.Tensor, ref: torch.Tensor) -> None:
        try:
            assert_close_to_ref(out, ref.to(out.device))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
        self.passed += 1

    def near_torch(self, name: str, out: torch.Tensor, eager: torch.Tensor, normed: bool = False) -> None:
        """The kernel and the torch path each round their own float32 value: two ulps of the dtype apart. After
        a norm the torch path also rounds the normalised q / k to the dtype before rotating, an error of the
        pair's size rather than the element's: a few ulps of the tensor's scale (as the family checks allow)."""
        eps = torch.finfo(out.dtype).eps
        err = (out.double() - eager.double()).abs()
        scale = eager.double().abs().max()
        noise = 16 * torch.finfo(torch.float32).eps * scale
        tol = 4 * eps * scale if normed else 2 * eps * eager.double().abs() + noise
        if (err > tol).any():
            raise AssertionError(f"{name}: kernel and torch path differ by up to {err.max():.3g}")
        self.passed += 1


def on(device, plan):
    return type(plan)(*(t.to(device) for t in plan))


def large_positions(seq: int, device, seed: int = 0) -> torch.Tensor:
    """[seq, 3] integer ids up to 65535 on every axis, the largest included."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, MAX_POSITION + 1, (seq, 3), generator=g).float()
    pos[0] = MAX_POSITION
    return pos.to(device)


def check_kernels(device, checks: Checks, quick: bool, seq: int = 217) -> None:
    for d, axes in ((128, (16, 56, 56)), (92, (16, 38, 38))):
        plan = on(device, dype_plan(axes=axes))
        positions = large_positions(seq, device)
        for dtype in KERNEL_DTYPES if (d == 128 or not quick) else (torch.bfloat16,):
            g = torch.Generator().manual_seed(1)
            weights = [(torch.rand(d, generator=g) + 0.5).to(dtype).to(device) for _ in range(2)]
            for layout in LAYOUTS:
                cos, sin = rope_tables(positions, plan, layout)
                for sequence_dim in (1, 2):
                    q, k = (t.to(device) for t in make_qk((2, seq, 6, d), (2, seq, 6, d), dtype, sequence_dim))
                    k = k[:, :, :2] if sequence_dim == 1 else k[:, :2]  # a slice of the heads: GQA, strided
                    tag = f"D={d} {dtype} {layout} sequence_dim={sequence_dim}"
                    refs = [ref_rope(x, positions, plan, layout, sequence_dim) for x in (q, k)]
                    for inplace in (False, True):
                        qi, ki = (q.clone(), k.clone()) if inplace else (q, k)
                        outs = rope_qk(qi, ki, positions, plan, layout, sequence_dim, inplace, "triton")
                        eager = rope_qk(q, k, positions, plan, layout, sequence_dim, backend="torch")
                        for name, out, ref, e in zip("qk", outs, refs, eager):
                            checks.close(f"rope_qk {tag} inplace={inplace} {name}", out, ref)
                            checks.near_torch(f"rope_qk vs torch {tag} inplace={inplace} {name}", out, e)
                        qi, ki = (q.clone(), k.clone()) if inplace else (q, k)
                        outs = rope_qk_tables(qi, ki, cos, sin, layout, sequence_dim, inplace, "triton")
                        for name, out, x in zip("qk", outs, (q, k)):
                            checks.close(f"rope_qk_tables {tag} inplace={inplace} {name}", out,
                                          ref_rope_tables(x, cos, sin, layout, sequence_dim))
                    outs = rms_norm_rope_qk(q, k, *weights, positions, plan, (1e-6, 1e-5), layout, sequence_dim,
                                            "triton")
                    eager = rms_norm_rope_qk(q, k, *weights, positions, plan, (1e-6, 1e-5), layout, sequence_dim,
                                             "torch")
                    for name, out, x, w, eps, e in zip("qk", outs, (q, k), weights, (1e-6, 1e-5), eager):
                        ref = ref_rope(ref_rms_norm(x, w, eps), positions, plan, layout, sequence_dim)
                        checks.close(f"rms_norm_rope_qk {tag} {name}", out, ref)
                        checks.near_torch(f"rms_norm_rope_qk vs torch {tag} {name}", out, e, normed=True)


def check_batched(device, checks: Checks) -> None:
    plan = on(device, batched_plan((8, 12, 12), ts=(0.9, 0.2)))
    positions = torch.stack([large_positions(33, device, 1), large_positions(33, device, 2)])
    q, k = (t.to(device) for t in make_qk((2, 33, 3, 32), (2, 33, 3, 32), torch.bfloat16, 2))
    outs = rope_qk(q, k, positions, plan, "half", 2, backend="triton")
    for name, out, x in zip("qk", outs, (q, k)):
        checks.close(f"batched plan and positions {name}", out, ref_rope(x, positions, plan, "half", 2))


def check_gradients(device, checks: Checks) -> None:
    plan = on(device, dype_plan(axes=(16, 56, 56)))
    positions = large_positions(65, device, 3)
    g = torch.Generator().manual_seed(4)
    w = [(torch.rand(128, generator=g) + 0.5).to(device) for _ in range(2)]
    ops: dict[str, tuple[Callable, Callable]] = {
        "rope_qk": (lambda q, k, w1, w2, layout: rope_qk(q, k, positions, plan, layout, backend="triton"),
                    lambda q, k, w1, w2, layout: (ref_rope(q, positions, plan, layout, 1),
                                                  ref_rope(k, positions, plan, layout, 1))),
        "rope_qk_tables": (
            lambda q, k, w1, w2, layout: rope_qk_tables(q, k, *rope_tables(positions, plan, layout), layout,
                                                        backend="triton"),
            lambda q, k, w1, w2, layout: tuple(ref_rope_tables(x, *rope_tables(positions, plan, layout), layout, 1)
                                               for x in (q, k))),
        "rms_norm_rope_qk": (
            lambda q, k, w1, w2, layout: rms_norm_rope_qk(q, k, w1, w2, positions, plan, 1e-6, layout,
                                                          backend="triton"),
            lambda q, k, w1, w2, layout: (ref_rope(ref_rms_norm(q, w1, 1e-6), positions, plan, layout, 1),
                                          ref_rope(ref_rms_norm(k, w2, 1e-6), positions, plan, layout, 1))),
    }
    for name, (fused, reference) in ops.items():
        for layout in LAYOUTS:
            q, k = (t.to(device) for t in make_qk((1, 65, 4, 128), (1, 65, 2, 128), torch.float32, 1, seed=5))
            leaves = [q.requires_grad_(), k.requires_grad_(), *(x.clone().requires_grad_() for x in w)]
            leaves64 = [x.detach().to(F64).requires_grad_() for x in leaves]
            gq, gk = torch.randn_like(q), torch.randn_like(k)
            out = fused(*leaves, layout)
            got = torch.autograd.grad((out[0] * gq).sum() + (out[1] * gk).sum(), leaves[:2])
            ref = reference(*leaves64, layout)
            want = torch.autograd.grad((ref[0] * gq).sum() + (ref[1] * gk).sum(), leaves64[:2])
            for tag, a, b in zip("qk", got, want):
                checks.close(f"gradient of {name} {layout} {tag}", a, b)


def check_compile(device, checks: Checks) -> None:
    from torch._dynamo.testing import CompileCounterWithBackend

    plan = on(device, dype_plan(axes=(16, 56, 56)))
    positions = large_positions(40, device, 6)
    q, k = (t.to(device) for t in make_qk((1, 40, 4, 128), (1, 40, 4, 128), torch.bfloat16, 1))
    counter = CompileCounterWithBackend("inductor")
    step = torch.compile(lambda q, k: rope_qk(q, k, positions, plan, backend="triton"), fullgraph=True,
                         backend=counter)
    with torch.no_grad():
        compiled, eager = step(q, k), rope_qk(q, k, positions, plan, backend="triton")
    assert counter.frame_count == 1, "torch.compile broke the graph around the triton_op"
    for a, b in zip(compiled, eager):
        assert torch.equal(a, b), "the compiled kernel differs from the eager launch"
    checks.passed += 1


def family_runs():
    """(name, model builder, inputs builder, base grid, output getter) of every family with a fused path."""
    from families.flux import flux2_inputs, flux_inputs, tiny_flux, tiny_flux2
    from families.qwen_image import qwen_inputs, tiny_qwen_image
    from families.video import WAN, tiny_wan

    sample = lambda out: out.sample  # noqa: E731
    sigma = lambda: torch.tensor([0.6])  # noqa: E731 - t = 0.6, passed as the FLUX-style pipelines pass it
    return [
        ("FLUX", tiny_flux, lambda: flux_inputs(12, 10, t=0.6, text_len=7), (4, 4), sample),
        ("FLUX.2", tiny_flux2, lambda: {**flux2_inputs((12, 10), text_len=7), "timestep": sigma()}, (4, 4), sample),
        ("Qwen-Image", tiny_qwen_image, lambda: {**qwen_inputs((12, 10), text_len=7), "timestep": sigma()}, (4, 4),
         sample),
        ("Wan", tiny_wan, lambda: WAN.inputs((3, 6, 5), 0.6), (2, 2), lambda out: out[0]),
    ]


def check_families(device, checks: Checks) -> None:
    for name, build, inputs, base, output in family_runs():
        for dtype in KERNEL_DTYPES:
            model = build().to(device, dtype)
            args = {key: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
                    for key, v in inputs().items()}
            outs = {}
            for backend in ("triton", "torch"):
                with torch.no_grad(), dype_rope.patch(model, base_grid=base, backend=backend) as handle:
                    assert handle.adapter.backend == backend
                    outs[backend] = output(model(**args)).float()
            # the kernels keep q and k in float32 between norm and rotation: a few roundings of the model dtype
            tol = 4 * torch.finfo(dtype).eps * outs["torch"].abs().max()
            err = (outs["triton"] - outs["torch"]).abs().max()
            if not err <= tol:
                raise AssertionError(f"{name} {dtype}: backend='triton' differs from 'torch' by {err:.3g} > {tol:.3g}")
            checks.passed += 1


def check_correctness(device, quick: bool = False) -> int:
    """Every check above on `device`; returns how many passed (raises AssertionError on the first failure)."""
    checks = Checks()
    check_kernels(device, checks, quick)
    check_batched(device, checks)
    check_gradients(device, checks)
    check_compile(device, checks)
    check_families(device, checks)
    return checks.passed
