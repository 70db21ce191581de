"""Node-path overhead of DyPE in ComfyUI: patched / stock step time of a FLUX-shaped ComfyUI model on the CPU.

    python benchmarks/bench_comfy_node.py [--comfyui PATH]                 # print the table
    python benchmarks/bench_comfy_node.py --write-results                  # also update benchmarks/RESULTS.md

The model is ComfyUI's own `comfy.ldm.flux.model.Flux`, built by `comfy.supported_models.Flux` at FLUX.1's width
(24 heads x 128, RoPE axes 16/56/56, 1 double + 1 single block, random weights, float32). The stock ModelPatcher
and the DyPE clones that the nodes make from it (DyPE: Dy-YaRN; DyPE_Compat: its default vision_yarn; base grid
a quarter of the image grid per side) are sampled by `comfy.sample.sample`, alternating call by call. Each step's
time is measured around ComfyUI's `apply_model` by an outer wrapper that every patcher shares, so it covers what
the node adds per step: DyPE's own apply_model wrapper, the replaced embedder, the per-step plan. Goal: <= 1.01x.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_model import replace_section  # noqa: E402

SECTION = "## ComfyUI node-path overhead"
RESULTS = HERE / "RESULTS.md"
GOAL = 1.01
FLUX_WIDTH = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                  hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=1, depth_single_blocks=1,
                  axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
                  txt_ids_dims=[])
TEXT_TOKENS = 32
TIMER_KEY = "dype_bench_timer"
CLOCK_NOTES = {"thread": "CPU time of the sampling thread, time.thread_time", "wall": "elapsed time"}


def import_comfy(root: Path):
    """ComfyUI in CPU mode with PyTorch attention (as its --cpu --use-pytorch-cross-attention flags set)."""
    sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.use_pytorch_cross_attention = True
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sample
    import comfy.supported_models

    return comfy


def flux_patcher(comfy, seed: int = 0):
    config = comfy.supported_models.Flux(dict(FLUX_WIDTH))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # ComfyUI builds its layers with torch.empty
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


CLOCKS = {
    # CPU seconds of the sampling thread: with one torch thread all of a step's work runs there, and time the
    # machine gives other processes is not counted (on a shared machine wall time mostly measures their load)
    "thread": time.thread_time,
    "wall": time.perf_counter,
}


class StepTimer:
    """An apply_model wrapper recording the seconds of every model call made through it."""

    def __init__(self, clock: str = "thread") -> None:
        self.clock = CLOCKS[clock]
        self.seconds: list[float] = []

    def __call__(self, executor, *args, **kwargs):
        start = self.clock()
        out = executor(*args, **kwargs)
        self.seconds.append(self.clock() - start)
        return out


class EmbedTimer:
    """Forward hooks timing one position-embedder module per call (the stock EmbedND, or DyPE's replacement,
    which calls the stock one inside: its time is the whole embedding of a patched step)."""

    def __init__(self, clock) -> None:
        self.clock, self.seconds, self._start = clock, [], None

    def attach(self, module) -> None:
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, module, args):
        self._start = self.clock()

    def _post(self, module, args, out):
        self.seconds.append(self.clock() - self._start)


def conditioning(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cond = [[torch.randn(1, TEXT_TOKENS, FLUX_WIDTH["context_in_dim"], generator=g),
             {"pooled_output": torch.randn(1, FLUX_WIDTH["vec_in_dim"], generator=g), "guidance": 3.5}]]
    return cond, cond


def measure(comfy, patchers: dict, embeds: dict, grid: int, rounds: int, steps: int, timer: StepTimer):
    """Median step seconds and median embedding seconds of each patcher in each round: two {name: [round]}, the
    order rotating every round."""
    positive, negative = conditioning()
    latent = torch.zeros(1, 16, grid * 2, grid * 2)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(grid))
    names = list(patchers)

    def run(name: str) -> tuple[float, float]:
        timer.seconds.clear()
        embeds[name].seconds.clear()
        with torch.inference_mode():
            comfy.sample.sample(patchers[name], noise, steps, 1.0, "euler", "simple", positive, negative, latent,
                                seed=0, disable_pbar=True)
        assert len(timer.seconds) == steps, "every step goes through the timing wrapper"
        assert len(embeds[name].seconds) == steps, f"one embedding per step, through the timed module: {name} {len(embeds[name].seconds)}"
        return statistics.median(timer.seconds), statistics.median(embeds[name].seconds)

    for name in names:  # warm-up
        run(name)
    steps_s: dict[str, list[float]] = {name: [] for name in names}
    embed_s: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            step, embed = run(name)
            steps_s[name].append(step)
            embed_s[name].append(embed)
    return steps_s, embed_s


def report(rows: list[dict], rounds: int, steps: int, clock: str) -> str:
    import platform

    lines = [
        f"Device: CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread; torch "
        f"{torch.__version__}; {datetime.date.today().isoformat()}. Command: "
        "`python benchmarks/bench_comfy_node.py --write-results`.",
        f"ComfyUI's Flux at FLUX.1's width (24 heads x 128, axes 16/56/56, 1 double + 1 single block, random "
        f"weights, float32), {TEXT_TOKENS} text tokens, sampled by comfy.sample.sample ({steps} euler steps, cfg "
        f"1); step = one apply_model call, timed ({clock} clock: {CLOCK_NOTES[clock]}) by an outer wrapper every "
        f"patcher shares; base grid a quarter of "
        f"the image grid per side; {rounds} alternating rounds, ratio = median over rounds of patched / stock "
        "(each round's median step).",
        "",
        "| node | method | grid (tokens) | sequence | stock ms | patched ms | patched - stock ms | patched/stock "
        "(paired median) | patched/stock (best of each) | stock spread over rounds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['node']} | {r['method']} | {r['grid']}x{r['grid']} | {r['grid'] ** 2 + TEXT_TOKENS} | "
            f"{r['stock_ms']:.2f} | {r['patched_ms']:.2f} | {r['extra_ms']:+.2f} | {r['ratio']:.4f}x | "
            f"{r['best_ratio']:.4f}x | {r['spread']:.1%} |"
        )
    lines += [
        "",
        "Where the difference comes from: the DyPE clone replaces only the rotary embedder (and starts each step "
        "in its apply_model wrapper, a few host operations on the latent's shape); everything else in the step is "
        "the stock model. The embedder alone, timed by hooks in the same runs:",
        "",
        "| node | grid (tokens) | stock embedder ms | DyPE embedder ms | expected patched/stock |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['node']} | {r['grid']}x{r['grid']} | {r['embed_stock_ms']:.3f} | "
                     f"{r['embed_patched_ms']:.3f} | {r['expected']:.4f}x |")
    lines += [
        "",
        "The spread column is (slowest - fastest) / median of the stock model's own rounds: the machine's noise, "
        "against which a whole-step ratio is read. The embedder rows measure the only work that differs.",
        "",
    ]
    for r in rows:
        verdict = "meets" if r["ratio"] <= GOAL else "misses"
        lines.append(f"- {r['node']} {r['grid']}x{r['grid']}: paired median {r['ratio']:.4f}x ({verdict} the goal "
                     f"<= {GOAL:.2f}x), best of each {r['best_ratio']:.4f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = HERE.parents[1] / "shared" / "comfyui"
    parser.add_argument("--comfyui", type=Path, default=default_root, help="ComfyUI's source folder")
    parser.add_argument("--grids", default="8,16", help="tokens per side, comma-separated")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="thread",
                        help="thread: CPU time of the sampling thread (needs --threads 1); wall: elapsed time")
    parser.add_argument("--write-results", action="store_true", help=f"replace the '{SECTION}' section of RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    comfy = import_comfy(args.comfyui)
    from dype_rope.adapters.comfyui.node import dype_model
    from dype_rope.adapters.comfyui.node_compat import comfyui_dype_model

    stock = flux_patcher(comfy)
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread counts the sampling thread only: use it with --threads 1")
    timer = StepTimer(args.clock)
    stock.add_wrapper_with_key("apply_model", TIMER_KEY, timer)  # outermost: the DyPE clones inherit it first
    rows, done = [], []
    for grid in [int(g) for g in args.grids.split(",")]:
        # a fresh start for each grid: nothing of the previous grid's patchers may still be loaded (their object
        # patches would be what runs), and they stay referenced so that no cleanup of theirs runs mid-measurement
        comfy.model_management.unload_all_models()
        base_px = max(grid // 4, 1) * 16
        patchers = {
            "stock": stock,
            "DyPE": dype_model(stock, method="yarn", base_resolution=base_px),
            "DyPE_Compat": comfyui_dype_model(stock, width=base_px, height=base_px, base_resolution=base_px),
        }
        embeds = {name: EmbedTimer(timer.clock) for name in patchers}
        embeds["stock"].attach(stock.get_model_object("diffusion_model").pe_embedder)
        for name in ("DyPE", "DyPE_Compat"):
            embeds[name].attach(patchers[name].object_patches["diffusion_model.pe_embedder"])
        times, embed_times = measure(comfy, patchers, embeds, grid, args.rounds, args.steps, timer)
        done.append(patchers)
        for node, method in (("DyPE", "yarn"), ("DyPE_Compat", "vision_yarn")):
            s, p = times["stock"], times[node]
            embed_extra = statistics.median(embed_times[node]) - statistics.median(embed_times["stock"])
            rows.append(dict(
                embed_stock_ms=1e3 * statistics.median(embed_times["stock"]),
                embed_patched_ms=1e3 * statistics.median(embed_times[node]),
                expected=1 + embed_extra / statistics.median(s),
                node=node, method=method, grid=grid, stock_ms=1e3 * statistics.median(s),
                patched_ms=1e3 * statistics.median(p), extra_ms=1e3 * statistics.median(b - a for a, b in zip(s, p)),
                ratio=statistics.median(b / a for a, b in zip(s, p)), best_ratio=min(p) / min(s),
                spread=(max(s) - min(s)) / statistics.median(s),
            ))
    text = report(rows, args.rounds, args.steps, args.clock)
    print(text)
    if args.write_results:
        old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""  # re-read: others edit it too
        RESULTS.write_text(replace_section(old, SECTION, text), encoding="utf-8")
        print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
