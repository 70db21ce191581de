"""Microbenchmarks of q + k RoPE, one provider per implementation (pytest-benchmark; small shapes, CPU too).

    pytest benchmarks/bench_kernels.py --benchmark-only --benchmark-group-by=param:shape

Providers: "diffusers" (FluxPosEmbed + 2x apply_rotary_emb, the chain FLUX runs today), "torch" (dype_rope's
pure-torch reference from positions and plan), "torch-compiled" (the same under torch.compile), "triton"
(the fused kernel from positions and plan), "triton-tables" (the fused kernel from precomputed tables),
and for QK-RMSNorm + RoPE "diffusers-norm" (two RMSNorm modules, then the diffusers chain) and "triton-norm".
Without CUDA the Triton providers run in the Triton interpreter: those timings say nothing about the kernel.
For GPU numbers against the bandwidth floor use benchmarks/gpu_bench.py.
"""

from __future__ import annotations

import os

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxPosEmbed

from dype_rope import DyPEConfig, build_plan, rope_tables
from dype_rope.kernels import rms_norm_rope_qk, rope_qk, rope_qk_tables

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
AXES, THETA = (16, 56, 56), 10000.0
# (text tokens, image rows, image cols, heads): FLUX's head dim 128, few heads and tokens so the CPU copes
SHAPES = {"L=80,H=4": (16, 8, 8, 4), "L=288,H=8": (32, 16, 16, 8)}
PROVIDERS = ("diffusers", "torch", "torch-compiled", "triton", "triton-tables")
NORM_PROVIDERS = ("diffusers-norm", "triton-norm")


def flux_ids(text: int, rows: int, cols: int) -> torch.Tensor:
    img = torch.stack([torch.zeros(rows * cols), torch.arange(rows).repeat_interleave(cols).float(),
                       torch.arange(cols).repeat(rows).float()], -1)
    return torch.cat([torch.zeros(text, 3), img]).to(DEVICE)


def inputs(shape: str):
    text, rows, cols, heads = SHAPES[shape]
    ids = flux_ids(text, rows, cols)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    q, k = (torch.randn(1, ids.shape[0], heads, sum(AXES), generator=g, device=DEVICE, dtype=torch.bfloat16)
            for _ in range(2))
    scales = torch.tensor([1.0, rows / 4, cols / 4], dtype=torch.float64, device=DEVICE)
    plan = build_plan(AXES, THETA, scales, torch.tensor(0.5, dtype=torch.float64, device=DEVICE), DyPEConfig(),
                      (1.0, 4.0, 4.0))
    return ids, q, k, plan


def provider_fn(provider: str, ids, q, k, plan):
    if provider == "diffusers":
        embed = FluxPosEmbed(int(THETA), list(AXES))
        def run():
            freqs = embed(ids)
            return apply_rotary_emb(q, freqs, sequence_dim=1), apply_rotary_emb(k, freqs, sequence_dim=1)
        return run
    if provider == "torch":
        return lambda: rope_qk(q, k, ids, plan, backend="torch")
    if provider == "torch-compiled":
        compiled = torch.compile(lambda q, k, ids: rope_qk(q, k, ids, plan, backend="torch"), dynamic=False)
        return lambda: compiled(q, k, ids)
    if provider == "triton":
        return lambda: rope_qk(q, k, ids, plan, backend="triton")
    if provider == "triton-tables":
        cos, sin = rope_tables(ids, plan)
        return lambda: rope_qk_tables(q, k, cos, sin, backend="triton")
    d = q.shape[-1]
    norm_q, norm_k = (torch.nn.RMSNorm(d, eps=1e-6, device=DEVICE, dtype=q.dtype) for _ in range(2))
    if provider == "diffusers-norm":
        def run():
            freqs = FluxPosEmbed(int(THETA), list(AXES))(ids)
            return (apply_rotary_emb(norm_q(q), freqs, sequence_dim=1),
                    apply_rotary_emb(norm_k(k), freqs, sequence_dim=1))
        return run
    if provider == "triton-norm":
        return lambda: rms_norm_rope_qk(q, k, norm_q.weight, norm_k.weight, ids, plan, 1e-6, backend="triton")
    raise ValueError(provider)


def measure(benchmark, provider: str, shape: str) -> None:
    fn = provider_fn(provider, *inputs(shape))
    synced = (lambda: (fn(), torch.cuda.synchronize())) if DEVICE == "cuda" else fn
    slow = INTERPRETED and provider.startswith("triton")
    benchmark.extra_info.update(provider=provider, device=DEVICE, interpreted=slow)
    with torch.no_grad():
        benchmark.pedantic(synced, rounds=3 if slow else 20, warmup_rounds=1)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_rope_qk(benchmark, provider, shape):
    measure(benchmark, provider, shape)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("provider", NORM_PROVIDERS)
def test_rms_norm_rope_qk(benchmark, provider, shape):
    measure(benchmark, provider, shape)
