"""What one plan per sample costs: patched / stock step time of FLUX-shaped transformers on a uniform batch.

    python benchmarks/bench_batch.py                      # CPU: grid 16, batch 2
    python benchmarks/bench_batch.py --write-results      # also update benchmarks/RESULTS.md

A batch of B samples at one time, as a pipeline sends it (the timestep has B entries). Two FLUX-shaped models
(24 heads x 128, RoPE axes 16/56/56, 1 double + 1 single block, random weights), stock and patched (Dy-YaRN,
base grid a quarter of the image grid per side), alternating call by call:

- BFL's FLUX.1 (`flux.model.Flux`, the reference code in the workspace's shared/bfl_flux), patched by the generic
  EmbedND adapter, which builds one plan per sample ([B, D/2]) and tables per sample;
- diffusers' FluxTransformer2DModel, whose attention takes one table per call, patched with one plan per call.

Goal: the per-sample plans cost nothing measurable, patched / stock within 1% (<= 1.01x).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
from pathlib import Path

import torch

import dype_rope
from dype_rope.app.bench import alternate, device_name, flux_shaped, summarise
from dype_rope.app.demo import image_ids

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "### Uniform batches (one plan per sample)"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "bfl_flux"
GOAL = 1.01
TEXT_TOKENS = 32


def bfl_flux(seed: int = 0) -> torch.nn.Module:
    """BFL's FLUX.1 with FLUX's head geometry and one block of each kind."""
    if str(SHARED) not in sys.path:
        sys.path.insert(0, str(SHARED))
    from flux.model import Flux, FluxParams

    torch.manual_seed(seed)
    params = FluxParams(in_channels=64, out_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                        mlp_ratio=4.0, num_heads=24, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
                        theta=10000, qkv_bias=True, guidance_embed=False)
    return Flux(params).eval()


def bfl_inputs(grid: int, batch: int) -> dict:
    g = torch.Generator().manual_seed(grid)
    return dict(
        img=torch.randn(batch, grid * grid, 64, generator=g), img_ids=image_ids(grid, grid).expand(batch, -1, -1),
        txt=torch.randn(batch, TEXT_TOKENS, 4096, generator=g), txt_ids=torch.zeros(batch, TEXT_TOKENS, 3),
        timesteps=torch.full((batch,), 0.7), y=torch.randn(batch, 768, generator=g),
    )


def diffusers_inputs(model, grid: int, batch: int) -> dict:
    cfg, g = model.config, torch.Generator().manual_seed(grid)
    return dict(
        hidden_states=torch.randn(batch, grid * grid, cfg.in_channels, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, cfg.joint_attention_dim, generator=g),
        pooled_projections=torch.randn(batch, cfg.pooled_projection_dim, generator=g),
        timestep=torch.full((batch,), 0.7), img_ids=image_ids(grid, grid), txt_ids=torch.zeros(TEXT_TOKENS, 3),
    )


def measure(name: str, stock: torch.nn.Module, inputs: dict, grid: int, repeats: int):
    patched = copy.deepcopy(stock)
    handle = dype_rope.patch(patched, base_grid=max(grid // 4, 1), backend="torch")
    with torch.inference_mode():
        patched_out = patched(**inputs)
        stock_out = stock(**inputs)
        assert not torch.equal(patched_out, stock_out)  # DyPE is active at this grid
        stock_s, patched_s = alternate([lambda: stock(**inputs), lambda: patched(**inputs)], repeats,
                                       torch.device("cpu"))
    plan = "per sample" if handle.adapter.name == "embednd" else "per call"
    handle.remove()
    return name, plan, summarise("cpu", "torch", grid, grid * grid + TEXT_TOKENS, stock_s, patched_s)


def report(rows, batch: int, repeats: int) -> str:
    lines = [
        f"Device: {device_name(torch.device('cpu'))}, 1 thread; torch {torch.__version__}; "
        f"{datetime.date.today().isoformat()}. Command: `python benchmarks/bench_batch.py --write-results`.",
        f"FLUX-shaped transformers (24 heads x 128, axes 16/56/56, 1 double + 1 single block, random weights), a "
        f"uniform batch of {batch} (timestep [{batch}], every entry 0.7), Dy-YaRN with the base grid a quarter of "
        f"the image grid per side; {repeats} alternating rounds, ratio = median over rounds of patched / stock.",
        "",
        "| model | plan | grid (tokens) | sequence | stock ms | patched ms | patched - stock ms | "
        "patched/stock (paired median) | patched/stock (best of each) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, plan, r in rows:
        lines.append(
            f"| {name} | {plan} | {r.grid}x{r.grid} | {r.tokens} | {r.stock_ms:.2f} | {r.patched_ms:.2f} | "
            f"{r.extra_ms:+.2f} | {r.ratio:.3f}x | {r.best_ratio:.3f}x |"
        )
    lines.append("")
    for name, plan, r in rows:
        verdict = "meets" if min(r.ratio, r.best_ratio) <= GOAL else "misses"
        lines.append(f"- {name} ({plan}): paired median {r.ratio:.3f}x, best of each {r.best_ratio:.3f}x: {verdict} "
                     f"the goal <= {GOAL:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=16, help="tokens per side (default 16)")
    parser.add_argument("--batch", type=int, default=2, help="samples per call (default 2)")
    parser.add_argument("--repeats", type=int, default=15, help="alternating rounds (default 15)")
    parser.add_argument("--write-results", action="store_true", help=f"replace '{SECTION}' in RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one busy core of a shared machine would otherwise stall every multi-threaded op
    rows = []
    if SHARED.is_dir():
        bfl = bfl_flux()
        rows.append(measure("BFL FLUX.1 (EmbedND adapter)", bfl, bfl_inputs(args.grid, args.batch), args.grid,
                            args.repeats))
        del bfl
    else:
        print(f"(no {SHARED.name} beside the repository: BFL's FLUX.1 not measured)")
    model = flux_shaped()
    rows.append(measure("diffusers FLUX", model, diffusers_inputs(model, args.grid, args.batch), args.grid,
                        args.repeats))
    text = report(rows, args.batch, args.repeats)
    print(text)
    if args.write_results:
        from bench_model import SECTION as MODEL_SECTION, replace_section, section_body

        doc = RESULTS.read_text()
        body = replace_section(section_body(doc, MODEL_SECTION), SECTION, text)
        RESULTS.write_text(replace_section(doc, MODEL_SECTION, body))


if __name__ == "__main__":
    main()
