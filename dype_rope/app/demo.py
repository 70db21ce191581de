"""`dype-rope demo`: DyPE on a tiny FLUX-architecture transformer, in seconds, on any CPU.

A diffusers FluxTransformer2DModel with seeded random weights (FLUX's layout: double and single blocks,
three RoPE axes for text/rows/columns with FLUX's 1:3.5:3.5 channel split) is patched with
`dype_rope.patch` and sampled with a flow-matching Euler loop at `factor` times its base grid per side.
Each step prints the diffusion time t, kappa(t), how far each image axis is stretched and its attention
temperature; an unpatched copy runs the same loop alongside to time both on the same inputs.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TextIO

import torch

from dype_rope.patching import PatchHandle, patch
from dype_rope.rope import build_plan
from dype_rope.schedules import kappa

from .errors import install_hint, missing

DEMO_FLUX = dict(
    patch_size=1,
    in_channels=16,
    num_layers=1,
    num_single_layers=2,
    attention_head_dim=32,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=(4, 14, 14),
)
TEXT_TOKENS = 8


@dataclass(frozen=True)
class StepInfo:
    """What the patched model uses at one step, per rescaled image axis (rows, columns)."""

    step: int
    t: float
    kappa: float
    scale: tuple[float, ...]  # size ratio s of the axis (grid / base grid)
    stretch: tuple[float, ...]  # geometric mean over the axis's pairs of plain / rescaled frequency
    mscale: tuple[float, ...]


@dataclass
class DemoResult:
    steps: list[StepInfo]
    grid: tuple[int, int]
    base_grid: tuple[int, int]
    stock_ms: float  # median step time of the unpatched model
    patched_ms: float  # median step time of the patched model
    time_ratio: float  # patched_ms / stock_ms: the ratio of the two medians above
    max_abs_diff: float  # final latent, patched vs unpatched trajectory
    plot_path: Path | None


def tiny_flux_transformer(seed: int = 0, **overrides) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(**{**DEMO_FLUX, **overrides}).eval()


def image_ids(rows: int, cols: int) -> torch.Tensor:
    """FLUX's image position ids [rows * cols, 3]: (0, row, column) per token."""
    r = torch.arange(rows, dtype=torch.float32).repeat_interleave(cols)
    c = torch.arange(cols, dtype=torch.float32).repeat(rows)
    return torch.stack([torch.zeros_like(r), r, c], dim=-1)


def step_info(handle: PatchHandle, step: int, t: float, grid: Sequence[int]) -> StepInfo:
    """Recompute on the host, from the handle's settings, the plan the patched model builds at time t."""
    model, cfg = handle.model, handle.config
    pos_embed = model.pos_embed
    axes = handle.adapter.rescaled_axes
    spans = torch.tensor([1.0, *map(float, grid)], dtype=torch.float64)
    scales = handle.adapter.axis_scales(spans)
    t64 = torch.tensor(t, dtype=torch.float64)
    base_lens = (1.0, *map(float, handle.base_grid))
    plan = build_plan(pos_embed.axes_dim, float(pos_embed.theta), scales, t64, cfg, base_lens)
    plain = build_plan(pos_embed.axes_dim, float(pos_embed.theta), torch.ones_like(scales), t64, cfg, base_lens)
    stretch, mscale = [], []
    for a in axes:
        pairs = plan.pair_axis == a
        stretch.append(float(torch.log(plain.inv_freq[pairs] / plan.inv_freq[pairs]).mean().exp()))
        mscale.append(float(plan.mscale[pairs][0]))
    k = float(kappa(t64, cfg.lambda_s, cfg.lambda_t)) if cfg.dynamic else float("nan")
    return StepInfo(step, t, k, tuple(float(scales[a]) for a in axes), tuple(stretch), tuple(mscale))


def run_demo(
    base_grid: int = 8,
    factor: Sequence[int] = (4, 4),
    steps: int = 28,
    method: str = "yarn",
    dynamic: bool = True,
    lambda_s: float | None = None,
    lambda_t: float | None = None,
    aspect: str = "per-axis",
    yarn_modulation: str = "multiply",
    seed: int = 0,
    plot: str | Path | None = "dype_demo_schedules.png",
    stream: TextIO | None = None,
) -> DemoResult:
    """Sample a tiny FLUX-architecture model with DyPE at `factor` x `base_grid` tokens per side; print each
    step; write the schedules' figure to `plot` (PNG or SVG; None: no figure)."""
    out = stream if stream is not None else sys.stdout
    if isinstance(base_grid, bool) or not isinstance(base_grid, int) or base_grid <= 0:
        raise ValueError(f"base_grid must be a positive number of tokens, got {base_grid!r}")
    if len(factor) != 2 or any(isinstance(f, bool) or not isinstance(f, int) or f <= 0 for f in factor):
        raise ValueError(f"factor must be two positive whole numbers (rows, columns), got {tuple(factor)!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive whole number, got {steps!r}")
    if plot is not None:
        from .plots import FORMATS

        if Path(plot).suffix.lower() not in FORMATS:
            raise ValueError(f"cannot write {str(plot)!r}: the figure format must be one of {FORMATS}")
    grid = (base_grid * factor[0], base_grid * factor[1])

    stock = tiny_flux_transformer(seed)
    model = copy.deepcopy(stock)
    handle = patch(
        model, method=method, dynamic=dynamic, base_grid=(base_grid, base_grid), lambda_s=lambda_s,
        lambda_t=lambda_t, aspect=aspect, yarn_modulation=yarn_modulation, backend="torch",
    )
    cfg = handle.config
    g = torch.Generator().manual_seed(seed)
    cond = dict(
        encoder_hidden_states=torch.randn(1, TEXT_TOKENS, DEMO_FLUX["joint_attention_dim"], generator=g),
        pooled_projections=torch.randn(1, DEMO_FLUX["pooled_projection_dim"], generator=g),
        img_ids=image_ids(*grid),
        txt_ids=torch.zeros(TEXT_TOKENS, 3),
    )
    noise = torch.randn(1, grid[0] * grid[1], DEMO_FLUX["in_channels"], generator=g)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)

    name = ("Dy-" if dynamic else "") + {"pi": "PI", "ntk": "NTK", "yarn": "YaRN"}.get(cfg.method, cfg.method)
    print(
        f"DyPE demo: tiny FLUX-architecture transformer (random weights), {name}, base grid "
        f"{base_grid}x{base_grid} tokens -> {grid[0]}x{grid[1]} (size ratio {factor[0]} x {factor[1]}), "
        f"{steps} Euler steps, kappa(t) = {cfg.lambda_s:g} * t^{cfg.lambda_t:g}",
        file=out,
    )
    print(
        "scale: size ratio s of each image axis; stretch: plain / rescaled frequency, geometric mean over the "
        "axis's pairs (1 = plain RoPE); mscale: attention temperature",
        file=out,
    )
    print(f"{'step':>5} {'t':>6} {'kappa':>7}  {'scale rows, cols':>16}  {'stretch rows, cols':>18}  "
          f"{'mscale rows, cols':>17}", file=out)

    x_stock, x_dype = noise.clone(), noise.clone()
    stock_times, patched_times, infos = [], [], []
    from tqdm import tqdm

    # A live bar on a terminal only (disable=None); rows go through tqdm.write so that they print above it.
    bar = tqdm(total=steps, desc="sampling", unit="step", file=out, disable=None, leave=False)
    with torch.inference_mode(), bar:
        warm = dict(hidden_states=noise, timestep=sigmas[:1], **cond)
        stock(**warm), model(**warm)  # first calls pay one-off allocation costs; keep them out of the timing
        for i in range(steps):
            t = sigmas[i : i + 1]
            dt = float(sigmas[i + 1] - sigmas[i])
            # Alternate which model goes first so that neither always runs on a warmer cache.
            order = ((stock, x_stock, stock_times), (model, x_dype, patched_times))
            v = {}
            for net, x, times in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                v[id(net)] = net(hidden_states=x, timestep=t, **cond).sample
                times.append(time.perf_counter() - start)
            v_stock, v_dype = v[id(stock)], v[id(model)]
            x_stock, x_dype = x_stock + dt * v_stock, x_dype + dt * v_dype
            info = step_info(handle, i, float(t[0]), grid)
            infos.append(info)
            cols = [", ".join(f"{v:.3f}" for v in vals) for vals in (info.scale, info.stretch, info.mscale)]
            bar.write(
                f"{i + 1:>5} {info.t:6.3f} {info.kappa:7.4f}  {cols[0]:>16}  {cols[1]:>18}  {cols[2]:>17}", file=out
            )
            bar.update()
    handle.remove()

    stock_ms, patched_ms = 1e3 * statistics.median(stock_times), 1e3 * statistics.median(patched_times)
    result = DemoResult(
        steps=infos,
        grid=grid,
        base_grid=(base_grid, base_grid),
        stock_ms=stock_ms,
        patched_ms=patched_ms,
        time_ratio=patched_ms / stock_ms,
        max_abs_diff=float((x_dype - x_stock).abs().max()),
        plot_path=None,
    )
    print(
        f"step time, median of {steps} steps: stock {stock_ms:.2f} ms, patched {patched_ms:.2f} ms; "
        f"patched/stock = {result.time_ratio:.3f}x (ratio of the two medians)",
        file=out,
    )
    print(
        f"final latent, max |patched - stock| = {result.max_abs_diff:.4g} (0 at or below the base grid, by design)",
        file=out,
    )
    print("(a tiny model: RoPE bookkeeping weighs more here than in FLUX; `dype-rope bench` measures FLUX's shape)",
          file=out)
    if plot is not None and missing("matplotlib"):
        print(f"no figure: drawing it needs matplotlib ({install_hint('matplotlib')})", file=out)
    elif plot is not None:
        from .plots import save_figure, schedule_figure

        rows_dim = DEMO_FLUX["axes_dims_rope"][1]
        fig = schedule_figure(
            dim=rows_dim, base_len=base_grid, target_len=grid[0], lambda_s=lambda_s, lambda_t=lambda_t,
            yarn_modulation=cfg.yarn_modulation,
        )
        result.plot_path = save_figure(fig, plot)
        print(f"schedules of the rows axis written to {result.plot_path}", file=out)
    return result
