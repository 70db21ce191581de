"""What DyPE costs: step time of a patched FLUX-shaped transformer over the stock one, and RoPE kernel timings.

Model level: one set of seeded random weights; the stock model and a patched copy run the same inputs,
alternating call by call so that neither always runs second; the ratio is the median patched step time over
the median stock one. The FLUX shape is the real head geometry (24 heads x 128, RoPE axes 16/56/56,
joint dim 4096) with few blocks; the base grid is a quarter of the image grid per side so DyPE is active.

Kernel level: one step's RoPE work on q and k [1, L, 24, 128]: diffusers' chain (FluxPosEmbed tables +
apply_rotary_emb twice) against ours (plan + tables + rotation, and the fused kernel on CUDA).
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .demo import image_ids
from .errors import UsageError, resolve_device

FLUX_SHAPE = dict(
    patch_size=1, in_channels=64, attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
    pooled_projection_dim=768, axes_dims_rope=(16, 56, 56),
)
TINY_SHAPE = dict(
    patch_size=1, in_channels=16, attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32,
    pooled_projection_dim=32, axes_dims_rope=(4, 14, 14),
)


@dataclass(frozen=True)
class Timing:
    """Median step times; `ratio`: the median over rounds of patched / stock measured in the same round
    (paired: load from other processes hits both calls of a round alike); `best_ratio`: fastest patched call
    over fastest stock call, the least disturbed estimate on a machine shared with other work."""

    device: str
    backend: str
    grid: int
    tokens: int
    stock_ms: float
    patched_ms: float
    ratio: float
    best_ratio: float
    extra_ms: float  # median over rounds of patched - stock

    @property
    def megapixels(self) -> float:
        return (self.grid * 16) ** 2 / 1e6  # FLUX: 16 px per token


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    threads = torch.get_num_threads()
    return f"CPU {platform.processor() or platform.machine()}, {threads} thread{'s' if threads != 1 else ''}"


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Seconds one call of fn takes; on CUDA measured with events after a synchronize."""

    def run(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin

    return run


def alternate(fns: Sequence[Callable[[], object]], repeats: int, device: torch.device) -> list[list[float]]:
    """Seconds of each call of each fn, [fn][round]: one warm-up call each, then `repeats` rounds calling
    them in turn, the order rotating every round so that none always runs first."""
    timer = _timer(device)
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = list(range(len(fns)))
        order = order[r % len(fns) :] + order[: r % len(fns)]
        for i in order:
            times[i].append(timer(fns[i]))
    return times


def flux_shaped(layers: tuple[int, int] = (1, 1), tiny: bool = False, seed: int = 0) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    shape = TINY_SHAPE if tiny else FLUX_SHAPE
    return FluxTransformer2DModel(**shape, num_layers=layers[0], num_single_layers=layers[1]).eval()


def model_overhead(
    grids: Sequence[int],
    device: str | torch.device = "cpu",
    backends: Sequence[str] = ("torch",),
    repeats: int = 5,
    layers: tuple[int, int] = (1, 1),
    tiny: bool = False,
    text_tokens: int | None = None,
    dtype: torch.dtype | None = None,
) -> list[Timing]:
    """Patched / stock step time at each image grid (tokens per side) for each backend."""
    import dype_rope

    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    text_tokens = text_tokens or (512 if device.type == "cuda" else 32)
    stock = flux_shaped(layers, tiny)
    if (device.type, dtype) != ("cpu", torch.float32):
        stock = stock.to(device, dtype)
    cfg = stock.config
    results = []
    for backend in backends:
        for grid in grids:
            patched = copy.deepcopy(stock)
            handle = dype_rope.patch(patched, base_grid=max(grid // 4, 1), backend=backend)
            g = torch.Generator().manual_seed(grid)
            inputs = dict(
                hidden_states=torch.randn(1, grid * grid, cfg.in_channels, generator=g).to(device, dtype),
                encoder_hidden_states=torch.randn(1, text_tokens, cfg.joint_attention_dim, generator=g).to(device, dtype),
                pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g).to(device, dtype),
                timestep=torch.full((1,), 0.7, device=device, dtype=dtype),
                img_ids=image_ids(grid, grid).to(device),
                txt_ids=torch.zeros(text_tokens, 3, device=device),
            )
            with torch.inference_mode():
                stock_s, patched_s = alternate([lambda: stock(**inputs), lambda: patched(**inputs)], repeats, device)
            handle.remove()
            results.append(summarise(str(device), backend, grid, grid * grid + text_tokens, stock_s, patched_s))
    return results


def summarise(
    device: str, backend: str, grid: int, tokens: int, stock_s: Sequence[float], patched_s: Sequence[float]
) -> Timing:
    """A Timing from the seconds of each round's stock and patched call (same index: same round)."""
    return Timing(
        device, backend, grid, tokens,
        stock_ms=1e3 * statistics.median(stock_s),
        patched_ms=1e3 * statistics.median(patched_s),
        ratio=statistics.median(p / s for p, s in zip(patched_s, stock_s)),
        best_ratio=min(patched_s) / min(stock_s),
        extra_ms=1e3 * statistics.median(p - s for p, s in zip(patched_s, stock_s)),
    )


def kernel_timings(
    grids: Sequence[int], device: str | torch.device = "cpu", repeats: int = 20, heads: int = 24,
    text_tokens: int | None = None, dtype: torch.dtype | None = None,
) -> list[dict]:
    """Milliseconds of one step's RoPE work for the sequence of FLUX at each image grid (tokens per side) with
    `text_tokens` text tokens in front (default as in model_overhead), in two groups:

    "tables": diffusers' FluxPosEmbed against our plan-from-t + tables (what the patched FLUX model adds);
    "tables + q,k": the same plus rotating q and k [1, L, heads, 128] (diffusers' apply_rotary_emb twice,
    our apply_rope twice, and on CUDA our fused kernel that computes the angles in-kernel).
    `ms` is the fastest of `repeats` calls (the least disturbed on a shared machine); `speedup` is over the
    diffusers row of the same group.
    """
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    from dype_rope import DyPEConfig, build_plan, rope_tables
    from dype_rope.kernels import triton_available
    from dype_rope.rope import apply_rope

    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    axes, theta = (16, 56, 56), 10000.0
    cfg = DyPEConfig()
    rows = []
    text_tokens = text_tokens if text_tokens is not None else (512 if device.type == "cuda" else 32)
    for side in grids:
        ids = torch.cat([torch.zeros(text_tokens, 3), image_ids(side, side)]).to(device)
        n = ids.shape[0]
        q, k = (torch.randn(1, n, heads, 128, device=device, dtype=dtype) for _ in range(2))
        scales = torch.tensor([1.0, 4.0, 4.0], dtype=torch.float64, device=device)
        t = torch.tensor(0.7, dtype=torch.float64, device=device)
        base_lens = (1.0, side / 4, side / 4)
        stock = FluxPosEmbed(theta=int(theta), axes_dim=list(axes))

        def plan():
            return build_plan(axes, theta, scales, t, cfg, base_lens)

        def diffusers_qk():
            cs = stock(ids)
            return apply_rotary_emb(q, cs, sequence_dim=1), apply_rotary_emb(k, cs, sequence_dim=1)

        def ours_qk():
            cos, sin = rope_tables(ids, plan())
            return apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        groups = {
            "tables": {"diffusers": lambda: stock(ids), "dype torch": lambda: rope_tables(ids, plan())},
            "tables + q,k": {"diffusers": diffusers_qk, "dype torch": ours_qk},
        }
        if device.type == "cuda" and triton_available():
            from dype_rope.kernels import rope_qk

            groups["tables + q,k"]["dype fused"] = lambda: rope_qk(q, k, ids, plan(), backend="triton")
        for group, fns in groups.items():
            with torch.inference_mode():
                secs = [min(x) for x in alternate(list(fns.values()), repeats, device)]
            for name, sec in zip(fns, secs):
                rows.append(dict(device=str(device), tokens=n, work=group, impl=name, ms=1e3 * sec, speedup=secs[0] / sec))
    return rows


def format_model_table(rows: Sequence[Timing]) -> str:
    lines = [
        "| device | backend | grid (tokens) | image (FLUX px) | sequence | stock ms | patched ms | patched - stock ms "
        "| patched/stock (paired median) | patched/stock (best of each) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        px = r.grid * 16
        lines.append(
            f"| {r.device} | {r.backend} | {r.grid}x{r.grid} | {px}x{px} ({r.megapixels:.2g} MP) | {r.tokens} | "
            f"{r.stock_ms:.2f} | {r.patched_ms:.2f} | {r.extra_ms:+.2f} | {r.ratio:.3f}x | {r.best_ratio:.3f}x |"
        )
    return "\n".join(lines)


def format_kernel_table(rows: Sequence[dict]) -> str:
    lines = ["| device | tokens | work | implementation | best ms | speedup over diffusers |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r['tokens']} | {r['work']} | {r['impl']} | {r['ms']:.3f} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def run_bench(args) -> int:
    """`dype-rope bench`: print the model-level table, then the kernel-level one."""
    device = resolve_device(args.device)
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"bench runs on cpu or cuda, got --device {args.device!r}")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # this process only: the fp32 cast warning is about loading weights
    gpu = device.type == "cuda"
    grids = args.grids or ([64, 128, 256] if gpu else [8, 16])
    repeats = args.repeats or (20 if gpu else 5)
    from dype_rope.kernels import triton_available

    backends = ["torch", "triton"] if gpu and triton_available() else ["torch"]
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    what = "tiny FLUX-like" if args.tiny else "FLUX-shaped (24 heads x 128, axes 16/56/56)"
    print(f"model level: {what}, {args.layers[0]} double + {args.layers[1]} single blocks, {repeats} timed calls each")
    if not gpu:
        print("(triton backend: needs CUDA, not measured here)")
    rows = model_overhead(grids, device, backends, repeats, args.layers, args.tiny)
    print(format_model_table(rows))
    if not args.skip_kernels:
        print("\nkernel level: one step's RoPE work (tables; tables + rotating q and k, 24 heads x 128)")
        print(format_kernel_table(kernel_timings(grids, device, max(repeats, 10))))
    return 0
