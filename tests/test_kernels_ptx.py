"""The kernels compile for a real GPU (sm_90 PTX, no GPU needed) and load / store q and k with 128-bit vectors.

The interpreter runs the kernels' Python, not Triton's compiler: code that only the compiler rejects (a
non-constexpr global, a non-static branch on a dtype) or a layout that defeats wide memory access would pass
every other CPU test. This file compiles each kernel in a subprocess without TRITON_INTERPRET, as a launch at
FLUX's shape (24 heads of 128 channels, bf16, unit channel stride, 16-byte aligned) would specialise it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys


def compile_ptx(kernel, pointers: dict, constexprs: dict, floats=()) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(kernel.fn).parameters)
    constexprs = dict(constexprs)
    warps = constexprs.pop("num_warps")
    unit = {n: 1 for n in names if n in ("sqd", "skd", "sod", "spd", "s_posa", "s_cd", "s_sd", "s_wq", "s_wk")}
    constexprs = {**constexprs, **unit}
    signature = {n: "constexpr" if n in constexprs else pointers.get(n, "fp32" if n in floats else "i64") for n in names}
    aligned = {(names.index(n),): [["tt.divisibility", 16]] for n, t in signature.items()
               if t.startswith("*") or (t == "i64" and n not in ("HQ", "HK"))}
    source = ASTSource(kernel, signature, {(names.index(n),): v for n, v in constexprs.items()}, aligned)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps)).asm["ptx"]


def main() -> None:
    """Compile every kernel x layout; print {name: [#128-bit loads, #128-bit stores]}."""
    from dype_rope.kernels.norm_rope_triton import norm_rope_qk_kernel
    from dype_rope.kernels.rope_tables_triton import rope_qk_tables_kernel
    from dype_rope.kernels.rope_triton import block_heads, block_warps, rope_qk_kernel

    qk = dict(Q="*bf16", K="*bf16", QO="*bf16", KO="*bf16")
    plan = dict(POS="*fp32", INV="*fp64", MS="*fp64", AXIS="*i64")
    found = {}
    for interleaved in (True, False):
        block_h = block_heads(64, 24)
        launch = dict(D_HALF=64, BLOCK_P=64, BLOCK_H=block_h, INTERLEAVED=interleaved,
                      num_warps=block_warps(block_h, 64, interleaved))
        variants = {
            "rope_qk": (rope_qk_kernel, {**qk, **plan}, dict(launch, CONJUGATE=False), ()),
            "rope_qk_tables": (rope_qk_tables_kernel, {**qk, "COS": "*fp32", "SIN": "*fp32"},
                               dict(launch, TRANSPOSE=False), ()),
            "norm_rope_qk": (norm_rope_qk_kernel, {**qk, **plan, "WQ": "*bf16", "WK": "*bf16"},
                             dict(launch, HAS_WEIGHT=True), ("eps_q", "eps_k")),
        }
        for name, (kernel, pointers, constexprs, floats) in variants.items():
            ptx = compile_ptx(kernel, pointers, constexprs, floats)
            found[f"{name} interleaved={interleaved}"] = [len(re.findall(r"ld\.global(\.nc)?\.v4", ptx)),
                                                          len(re.findall(r"st\.global\.v4", ptx))]
    print(json.dumps(found))


def test_kernels_compile_to_ptx_with_128_bit_access(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(found) == 6
    for name, (loads, stores) in found.items():
        # q and k: at least one vector load and store each (the tables kernel also loads its tables wide)
        assert loads >= 2 and stores >= 2, f"{name}: {loads} 128-bit loads, {stores} 128-bit stores"


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
