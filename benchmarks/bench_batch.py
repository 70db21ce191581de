"""What one plan per sample costs: patched / stock step time of FLUX-shaped transformers on a uniform batch.

    python benchmarks/bench_batch.py                      # CPU: diffusers FLUX, grid 8, batch 2 (well under a minute)
    python benchmarks/bench_batch.py --bfl --grid 16 --repeats 15 --write-results   # the RESULTS.md run

A batch of B samples at one time, as a pipeline sends it (the timestep has B entries). Two FLUX-shaped models
(24 heads x 128, RoPE axes 16/56/56, 1 double + 1 single block, random weights), stock and patched (Dy-YaRN,
base grid a quarter of the image grid per side), alternating call by call:

- with --bfl, BFL's FLUX.1 (`flux.model.Flux`, the reference code in the workspace's shared/bfl_flux), patched by
  the generic EmbedND adapter, which builds one plan per sample ([B, D/2]) and tables per sample;
- diffusers' FluxTransformer2DModel, patched with one plan per sample too: tables [B, L, D] through per-sample
  copies of its attention processors (adapters/per_sample.py), the batch folded into the sequence for the
  rotation only.

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
    batched = []  # whether the position encoding's tables carry the batch: one plan per sample
    encoding = getattr(patched, "pos_embed", None) or getattr(patched, "pe_embedder", None)
    # BFL: rotation matrices [B, 1, L, D/2, 2, 2]; diffusers: (cos, sin) [B, L, D] per sample, [L, D] per call
    first = (lambda out: out) if name.startswith("BFL") else (lambda out: out[0] if out[0].dim() == 3 else None)
    hook = encoding.register_forward_hook(
        lambda m, a, out: batched.append(first(out) is not None and first(out).shape[0] == inputs_batch(inputs))
    )
    with torch.inference_mode():
        first = lambda out: out if torch.is_tensor(out) else out[0]  # noqa: E731 (diffusers returns a dataclass)
        assert not torch.equal(first(patched(**inputs)), first(stock(**inputs)))  # DyPE is active at this grid
        stock_s, patched_s = alternate([lambda: stock(**inputs), lambda: patched(**inputs)], repeats,
                                       torch.device("cpu"))
    hook.remove()
    plan = "per sample" if all(batched) else "per call"
    handle.remove()
    return name, plan, summarise("cpu", "torch", grid, grid * grid + TEXT_TOKENS, stock_s, patched_s)


def inputs_batch(inputs: dict) -> int:
    return (inputs.get("hidden_states") if "hidden_states" in inputs else inputs["img"]).shape[0]


def report(rows, batch: int, repeats: int) -> str:
    lines = [
        f"Device: {device_name(torch.device('cpu'))}; torch {torch.__version__}; "
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
        # both estimates must agree for a verdict: on a loaded machine they drift apart by more than the goal
        if max(r.ratio, r.best_ratio) <= GOAL:
            verdict = f"meets the goal <= {GOAL:.2f}x"
        elif min(r.ratio, r.best_ratio) > GOAL:
            verdict = f"misses the goal <= {GOAL:.2f}x"
        else:
            verdict = f"inconclusive (the two estimates straddle the goal <= {GOAL:.2f}x: machine load)"
        lines.append(f"- {name} ({plan}): paired median {r.ratio:.3f}x, best of each {r.best_ratio:.3f}x: {verdict}")
    return "\n".join(lines)


def table_overhead(grid: int, batch: int, repeats: int = 200) -> tuple[float, float]:
    """Best ms of the rotation matrices of one step (text + image tokens, FLUX's axes) with a plan per sample
    ([B, D/2]) and with one plan for the call ([D/2]): what per-sample plans add to a step, measured alone."""
    import time

    from dype_rope.config import DyPEConfig
    from dype_rope.rope import build_plan
    from dype_rope.rope_formats import rotation_matrices

    ids = torch.cat([torch.zeros(TEXT_TOKENS, 3), image_ids(grid, grid)]).expand(batch, -1, -1)
    scales = torch.tensor([1.0, 4.0, 4.0], dtype=torch.float64)
    base = max(grid // 4, 1)
    best = []
    for t in (torch.full((batch,), 0.7, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)):
        def step():
            plan = build_plan((16, 56, 56), 10000.0, scales, t, DyPEConfig(), (1.0, base, base))
            return rotation_matrices(ids, plan)

        step()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        best.append(1e3 * min(times))
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=8, help="tokens per side (default 8)")
    parser.add_argument("--batch", type=int, default=2, help="samples per call (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--bfl", action="store_true", help="also measure BFL's FLUX.1 (shared/bfl_flux)")
    parser.add_argument("--write-results", action="store_true", help=f"replace '{SECTION}' in RESULTS.md")
    parser.add_argument("--tables-only", action="store_true", help="only the per-sample table work, measured alone")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one busy core of a shared machine would otherwise stall every multi-threaded op
    if args.tables_only:
        per_sample, per_call = table_overhead(args.grid, args.batch)
        print(f"plan + rotation matrices: {per_sample:.3f} ms per sample, {per_call:.3f} ms per call")
        return
    rows = []
    if args.bfl and SHARED.is_dir():
        bfl = bfl_flux()
        rows.append(measure("BFL FLUX.1 (EmbedND adapter)", bfl, bfl_inputs(args.grid, args.batch), args.grid,
                            args.repeats))
        del bfl
    elif args.bfl:
        print(f"(no {SHARED.name} beside the repository: BFL's FLUX.1 not measured)")
    model = flux_shaped()
    rows.append(measure("diffusers FLUX", model, diffusers_inputs(model, args.grid, args.batch), args.grid,
                        args.repeats))
    text = report(rows, args.batch, args.repeats)
    per_sample, per_call = table_overhead(args.grid, args.batch)
    stock_ms = rows[0][2].stock_ms
    text += (
        f"\n\nThe per-sample work measured alone (best of 200): plan and rotation matrices of one step "
        f"({args.grid * args.grid + TEXT_TOKENS} tokens, batch {args.batch}) take {per_sample:.3f} ms with a plan per "
        f"sample and {per_call:.3f} ms with one plan for the call, {per_sample - per_call:+.3f} ms, i.e. "
        f"{(per_sample - per_call) / stock_ms:+.4%} of the {stock_ms:.0f} ms step above."
    )
    print(text)
    if args.write_results:
        from bench_model import SECTION as MODEL_SECTION, replace_section, section_body

        doc = RESULTS.read_text()
        body = replace_section(section_body(doc, MODEL_SECTION), SECTION, text)
        RESULTS.write_text(replace_section(doc, MODEL_SECTION, body))


if __name__ == "__main__":
    main()
