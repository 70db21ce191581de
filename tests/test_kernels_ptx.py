"""Static checks of the compiled kernels, without a GPU: every kernel x dtype x layout for sm_80, sm_86, sm_89
and sm_90, compiled with the signature a real launch produces.

The interpreter runs the kernels' Python, not Triton's compiler: code that only the compiler rejects (a
non-constexpr global, a non-static branch on a dtype), float64 arithmetic, a layout that defeats wide memory
access or a tile that spills registers would pass every other CPU test. Here a subprocess (without
TRITON_INTERPRET) calls each real launcher (launch_rope_qk, launch_rope_qk_tables, launch_norm_rope_qk) on CPU
tensors at FLUX's shape (24 heads of 128 channels, [B, L, H, D]), catches the arguments it hands to the kernel,
and lets Triton's own launch binder specialise them (pointer dtypes and 16-byte alignment, strides equal to
1 as constants, every constexpr) exactly as a launch on a GPU would; then triton.compile builds PTX and, with
the ptxas shipped in Triton's wheel, a cubin for each architecture. cuobjdump (also in the wheel) reads each
cubin's register count and local memory (where spills go).

Checked for every combination:
- no .f64 instruction in the PTX (consumer GPUs run float64 at 1/64 of float32);
- every global store is a 128-bit vector store, and at least as many 128-bit vector loads are issued (all
  stores are q / k outputs, so q and k are read and written 16 bytes at a time);
- no local memory or stack (no register spills);
- at most MAX_REGISTERS registers per thread.
Plus, on sm_90, 40 and 48 heads (Wan 14B, FLUX.2) under the same checks, and a head dim of 92 (masked pairs,
unaligned rows) with no .f64, no spills and the same register bound.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ARCHS = (80, 86, 89, 90)
DTYPES = ("float32", "bfloat16", "float16")
LAYOUTS = ("interleaved", "half")
KERNELS = ("rope_qk", "rope_qk_tables", "norm_rope_qk")
# 256 threads per program (8 warps at FLUX's shape) x 96 registers leave room for two programs per SM.
MAX_REGISTERS = 96


def launch_arguments(kernel_name: str, dtype_name: str, interleaved: bool, d: int, heads: int = 24):
    """(JITFunction, args, kwargs) that the real launcher passes to the kernel for q, k [1, 8, heads, d]."""
    import torch

    from dype_rope import DyPEConfig, build_plan, rope_tables
    from dype_rope.kernels import norm_rope_triton, rope_tables_triton, rope_triton

    dtype = getattr(torch, dtype_name)
    q = torch.randn(1, 8, heads, d).to(dtype)
    k, q_out, k_out = q.clone(), q.clone(), q.clone()
    axes = (16, 56, 56) if d == 128 else (16, 38, 38)
    plan = build_plan(axes, 10000.0, torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64),
                      torch.tensor(0.5, dtype=torch.float64), DyPEConfig(), (1.0, 64.0, 64.0))
    positions = torch.zeros(8, 3)
    module, kernel, launch = {
        "rope_qk": (rope_triton, "rope_qk_kernel",
                    lambda: rope_triton.launch_rope_qk(q, k, q_out, k_out, positions, *plan, interleaved, 1, False)),
        "rope_qk_tables": (rope_tables_triton, "rope_qk_tables_kernel",
                           lambda: rope_tables_triton.launch_rope_qk_tables(
                               q, k, q_out, k_out, *rope_tables(positions, plan), interleaved, 1, False)),
        "norm_rope_qk": (norm_rope_triton, "norm_rope_qk_kernel",
                         lambda: norm_rope_triton.launch_norm_rope_qk(
                             q, k, q_out, k_out, torch.ones(d, dtype=dtype), torch.ones(d, dtype=dtype), 1e-6, 1e-6,
                             positions, *plan, interleaved, 1)),
    }[kernel_name]
    jit = getattr(module, kernel)
    caught = {}

    def catch(*args, grid, warmup, **kwargs):
        caught.update(args=args, kwargs=kwargs)

    jit.run = catch  # this subprocess only: the launcher's arguments are caught instead of launched
    try:
        launch()
    finally:
        del jit.run
    return jit, caught["args"], caught["kwargs"]


def compile_for(jit, args, kwargs, arch: int):
    """Compile as JITFunction.run would on an sm_<arch> device: Triton's binder, _pack_args, then compile."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(jit.signature, jit.params, backend)
    kwargs = dict(kwargs, debug=False)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = jit._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(ASTSource(jit, signature, constexprs, attrs), target=target, options=options.__dict__)


def resources(cubin: bytes, workdir: Path) -> dict[str, int]:
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    path = workdir / "kernel.cubin"
    path.write_bytes(cubin)
    out = subprocess.run([str(tool), "-res-usage", str(path)], capture_output=True, text=True, check=True).stdout
    return {key.lower(): int(val) for key, val in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", out)}


def summarise(ptx: str) -> dict[str, int]:
    return dict(
        f64=len(re.findall(r"\.f64\b", ptx)),
        loads_v4=len(re.findall(r"\bld\.global(?:\.[\w:]+)*\.v4\.", ptx)),
        stores_v4=len(re.findall(r"\bst\.global(?:\.[\w:]+)*\.v4\.", ptx)),
        stores=len(re.findall(r"\bst\.global\.", ptx)),
    )


def cases():
    """(name, kernel, dtype, layout, head dim, heads, archs): FLUX's 24 heads everywhere, plus head dim 92 and the
    40 / 48 heads of Wan 14B and FLUX.2 (one [64, D] tile each) on sm_90."""
    for kernel in KERNELS:
        for dtype in DTYPES:
            for layout in LAYOUTS:
                yield f"{kernel}-{dtype}-{layout}", kernel, dtype, layout, 128, 24, ARCHS
        yield f"{kernel}-bfloat16-interleaved-d92", kernel, "bfloat16", "interleaved", 92, 24, (90,)
        for heads in (40, 48):
            yield f"{kernel}-bfloat16-interleaved-h{heads}", kernel, "bfloat16", "interleaved", 128, heads, (90,)


def main(workdir: Path) -> None:
    """Compile every case; print one JSON object {"<case>-sm<arch>": summary}."""
    found = {}
    for name, kernel, dtype, layout, d, heads, archs in cases():
        jit, args, kwargs = launch_arguments(kernel, dtype, layout == "interleaved", d, heads)
        for arch in archs:
            compiled = compile_for(jit, args, kwargs, arch)
            found[f"{name}-sm{arch}"] = {**summarise(compiled.asm["ptx"]), **resources(compiled.asm["cubin"], workdir),
                                         "num_warps": compiled.metadata.num_warps}
    print(json.dumps(found))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ptx")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, __file__, str(workdir)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


ALIGNED = [f"{name}-sm{arch}" for name, _, _, _, d, _, archs in cases() for arch in archs if d == 128]
UNALIGNED = [f"{name}-sm{arch}" for name, _, _, _, d, _, archs in cases() for arch in archs if d != 128]


def test_every_case_compiled(compiled):
    assert sorted(compiled) == sorted(ALIGNED + UNALIGNED)
    assert len(ALIGNED) == len(KERNELS) * (len(DTYPES) * len(LAYOUTS) * len(ARCHS) + 2)


@pytest.mark.parametrize("case", ALIGNED)
def test_aligned_head_dim(compiled, case):
    r = compiled[case]
    assert r["f64"] == 0, f"{case}: {r['f64']} float64 instructions"
    assert r["stores"] > 0 and r["stores_v4"] == r["stores"], \
        f"{case}: {r['stores_v4']} of {r['stores']} stores are 128-bit"
    assert r["loads_v4"] >= r["stores_v4"], f"{case}: {r['loads_v4']} 128-bit loads for {r['stores_v4']} 128-bit stores"
    assert r["local"] == 0 and r["stack"] == 0, f"{case}: spills ({r['local']} bytes local, {r['stack']} stack)"
    assert 0 < r["reg"] <= MAX_REGISTERS, f"{case}: {r['reg']} registers per thread (bound {MAX_REGISTERS})"


@pytest.mark.parametrize("case", UNALIGNED)
def test_head_dim_92(compiled, case):
    r = compiled[case]
    assert r["f64"] == 0 and r["local"] == 0 and r["stack"] == 0 and 0 < r["reg"] <= MAX_REGISTERS, f"{case}: {r}"


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(Path(sys.argv[1]))
