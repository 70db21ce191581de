"""`dype-rope` (also `python -m dype_rope`): demo, plot, generate, bench.

    dype-rope demo                      tiny FLUX-architecture model, 28 steps at 4x its base grid, in seconds
    dype-rope plot -o schedules.png     effective RoPE frequencies against t for PI / NTK / YaRN and Dy- variants
    dype-rope generate --model DIR --prompt "..." --height 4096 --width 4096 -o out.png
    dype-rope bench                     patched / stock step time of a FLUX-shaped transformer, kernel timings
    dype-rope models                    which model classes DyPE patches, refuses, or does not know

Bad arguments print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

from dype_rope import __version__

from .errors import UsageError, check_writable, install_hint, missing, require
from .limits import bench_bytes, check_fits, demo_bytes, host_memory, plot_bytes

METHOD_CHOICES = ("yarn", "ntk", "pi", "none")
# Flow-matching schedulers compute e^mu in float32: beyond this the shifted sigmas are inf / inf = NaN.
MAX_ABS_MU = 80.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


# -- argument types -----------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def _factor(text: str) -> tuple[int, int]:
    """"4" -> (4, 4); "4x2" -> (4, 2) (rows x columns)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        # judged as a whole: "3x" must not be reported as a bad number ''
        raise argparse.ArgumentTypeError(f"expected N or ROWSxCOLS in whole numbers (e.g. 4 or 4x2), got {text!r}")
    values = tuple(_positive_int(p) for p in parts)
    return values * 2 if len(values) == 1 else values


def _int_list(text: str) -> list[int]:
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}")
    return [_positive_int(p) for p in parts]


def _methods(text: str) -> list[str]:
    from dype_rope.schedules import SCHEDULES

    names = [m.strip() for m in text.split(",") if m.strip()]
    for m in names:
        if m not in SCHEDULES or m == "none":
            known = ", ".join(sorted(k for k in SCHEDULES if k != "none"))
            raise argparse.ArgumentTypeError(f"unknown method {m!r} (choose from {known})")
    if not names:
        raise argparse.ArgumentTypeError("expected at least one method")
    return names


def _shift(text: str):
    if text in ("pinned", "linear"):
        return text
    try:
        mu = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'pinned', 'linear' or a number (mu), got {text!r}") from None
    if not math.isfinite(mu) or abs(mu) > MAX_ABS_MU:
        raise argparse.ArgumentTypeError(
            f"mu must be a finite number in [-{MAX_ABS_MU:g}, {MAX_ABS_MU:g}] (e^mu must fit in float32), got {text}"
        )
    return mu


def _add_schedule_options(p: argparse.ArgumentParser, with_method: bool = True) -> None:
    if with_method:
        p.add_argument("--method", choices=METHOD_CHOICES, default="yarn", help="RoPE extrapolation method (default: yarn)")
        p.add_argument("--static", action="store_true", help="use the static method instead of its Dy- variant")
        p.add_argument(
            "--aspect", choices=("per-axis", "isotropic"), default="per-axis",
            help="per-axis: each axis its own size ratio; isotropic: the largest ratio on both (default: per-axis)",
        )
    p.add_argument("--lambda-s", type=_positive_float, default=None, help="kappa(t) = lambda_s * t^lambda_t (default: per method)")
    p.add_argument("--lambda-t", type=_nonneg_float, default=None, help="exponent of t in kappa(t) (default: per method)")
    p.add_argument(
        "--yarn-modulation", choices=("multiply", "power"), default="multiply",
        help="Dy-YaRN thresholds times kappa (multiply, the paper) or to the power kappa (power, ComfyUI-DyPE)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dype-rope",
        description="DyPE: dynamic RoPE rescaling that lets diffusion transformers sample far above their "
        "training resolution. With no command, runs `demo`.",
    )
    parser.add_argument("--version", action="version", version=f"dype-rope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser("demo", help="patch a tiny FLUX-architecture model and sample it at 4x its base grid")
    demo.description = (
        "Build a tiny FLUX-architecture transformer (seeded random weights), patch it with DyPE, run a "
        "flow-matching Euler loop at FACTOR x its base grid, print t, kappa, per-axis scale, stretch and mscale "
        "at each step, the patched/stock step-time ratio, and write a figure of the schedules."
    )
    demo.add_argument("--base-grid", type=_positive_int, default=8, help="the model's base grid in tokens per side (default: 8)")
    demo.add_argument("--factor", type=_factor, default=(4, 4), help="size ratio per side, N or ROWSxCOLS (default: 4)")
    demo.add_argument("--steps", type=_positive_int, default=28, help="Euler steps (default: 28)")
    demo.add_argument("--seed", type=int, default=0, help="seed of weights, text embeddings and noise (default: 0)")
    demo.add_argument("-o", "--output", default="dype_demo_schedules.png", help="figure path, .png or .svg (default: %(default)s)")
    demo.add_argument("--no-plot", action="store_true", help="do not write the figure")
    _add_schedule_options(demo)

    plot = sub.add_parser("plot", help="figure of the effective RoPE frequencies against t")
    plot.description = (
        "Effective frequency of every channel pair of one RoPE axis against the diffusion time t, for PI, NTK "
        "and YaRN (static, dashed) and their Dy- variants (solid), with plain RoPE (dotted) and the attention "
        "temperature mscale. Defaults: a FLUX rows axis (56 channels, theta 10000) going from 64 to 256 "
        "tokens, i.e. 1024 px to 4096 px."
    )
    plot.add_argument("--dim", type=_positive_int, default=56, help="channels of the axis (even; default: 56)")
    plot.add_argument("--theta", type=_positive_float, default=10000.0, help="RoPE base (default: 10000)")
    plot.add_argument("--base", type=_positive_float, default=64, help="tokens on the axis at training (default: 64)")
    plot.add_argument("--target", type=_positive_float, default=256, help="tokens on the axis now (default: 256)")
    plot.add_argument("--methods", type=_methods, default=["pi", "ntk", "yarn"], help="comma-separated (default: pi,ntk,yarn)")
    plot.add_argument("--num-t", type=_positive_int, default=101, help="samples of t in [0, 1] (default: 101)")
    plot.add_argument("-o", "--output", default="dype_schedules.png", help="figure path, .png or .svg (default: %(default)s)")
    _add_schedule_options(plot, with_method=False)

    gen = sub.add_parser("generate", help="sample a diffusers pipeline with DyPE (offline, local folder or cache)")
    gen.description = (
        "Load a diffusers pipeline (a local folder, or a model id already in the local cache: nothing is "
        "downloaded), enable DyPE for the target size with dype_rope.enable, sample, and save the image with "
        "the settings in its PNG metadata. --compare also renders without DyPE and with the static method "
        "and saves a side-by-side grid next to the output."
    )
    gen.add_argument("--model", required=True, help="pipeline folder or cached model id")
    gen.add_argument("--prompt", required=True, help="text prompt")
    gen.add_argument("--height", type=_positive_int, default=2048, help="image height in pixels (default: 2048)")
    gen.add_argument("--width", type=_positive_int, default=2048, help="image width in pixels (default: 2048)")
    gen.add_argument("--steps", type=_positive_int, default=28, help="sampling steps (default: 28)")
    gen.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    gen.add_argument("--guidance-scale", type=_nonneg_float, default=None, help="passed to the pipeline when given")
    gen.add_argument("--shift", type=_shift, default="pinned", help="scheduler shift: pinned, linear or a number mu (default: pinned)")
    gen.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    gen.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="default: bfloat16 on cuda, else float32")
    gen.add_argument("--base-grid", type=_factor, default=None, help="training grid in tokens, N or ROWSxCOLS (default: the model's own)")
    gen.add_argument("--base-resolution", type=_factor, default=None, help="training size in pixels, N or HxW (default: the model's own)")
    gen.add_argument("--backend", choices=("auto", "torch", "triton"), default="auto", help="RoPE backend: auto takes the fused Triton kernels on CUDA once their GPU check has passed (default: auto)")
    gen.add_argument("--compare", action="store_true", help="also render without DyPE and static, save a side-by-side grid")
    gen.add_argument("-o", "--output", default="dype.png", help="output PNG (default: %(default)s)")
    _add_schedule_options(gen)

    bench = sub.add_parser("bench", help="benchmarks available on this machine (model and kernel level)")
    bench.description = (
        "Model level: step time of a FLUX-shaped transformer (24 heads x 128, axes 16/56/56, few layers, random "
        "weights) patched with DyPE over the stock diffusers model, same inputs, same run; backend torch, and "
        "triton on CUDA. Kernel level: RoPE tables + rotation of q and k, ours against diffusers' chain."
    )
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu)")
    bench.add_argument("--grids", type=_int_list, default=None, help="image grids in tokens per side, comma-separated (default: 8,16 on CPU; 64,128,256 = 1, 4, 16 MP on GPU)")
    bench.add_argument("--repeats", type=_positive_int, default=None, help="timed calls per model and grid (default: 5 on CPU, 20 on GPU)")
    bench.add_argument("--layers", type=_factor, default=(1, 1), help="double x single blocks, e.g. 1x1 (default: 1x1)")
    bench.add_argument("--tiny", action="store_true", help="a tiny FLUX-like geometry instead of FLUX's (a quick smoke run)")
    bench.add_argument("--skip-kernels", action="store_true", help="only the model-level table")

    models = sub.add_parser("models", help="which model classes of the installed diffusers (and ComfyUI) DyPE patches")
    models.description = (
        "Every transformer class of the installed diffusers, and ComfyUI's model classes when ComfyUI is importable: "
        "supported (with its family row or adapter), refused (with the reason), no rope (nothing to rescale) or "
        "unknown (a rotary encoding without a row: docs/families.md)."
    )
    models.add_argument("--readme", action="store_true", help="print the README's supported-models table instead")
    models.add_argument("--comfyui", metavar="DIR", help="a ComfyUI checkout whose model classes to report as well")
    return parser


# -- commands -----------------------------------------------------------------------------------------------
def _config(args: argparse.Namespace, method: str = "yarn", dynamic: bool = True):
    """Validate the schedule options once, here, so bad values are usage errors and not tracebacks."""
    from dype_rope.config import DyPEConfig

    try:
        return DyPEConfig(method, dynamic, args.lambda_s, args.lambda_t, args.yarn_modulation)
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None


def _figure_path(path: str) -> None:
    from .plots import FORMATS

    check_writable(path, FORMATS)


def cmd_demo(args: argparse.Namespace) -> int:
    _config(args, args.method, not args.static)
    rows, cols = (args.base_grid * f for f in args.factor)
    check_fits(f"--base-grid {args.base_grid} x --factor {args.factor[0]}x{args.factor[1]} ({rows} x {cols} tokens)",
               demo_bytes(args.base_grid, args.factor), host_memory())
    if not args.no_plot:
        _figure_path(args.output)
    require("diffusers", "demo")
    from .demo import run_demo

    run_demo(
        base_grid=args.base_grid, factor=args.factor, steps=args.steps, method=args.method, dynamic=not args.static,
        lambda_s=args.lambda_s, lambda_t=args.lambda_t, aspect=args.aspect, seed=args.seed,
        plot=None if args.no_plot else args.output, yarn_modulation=args.yarn_modulation,
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    if args.dim % 2:
        raise UsageError(f"--dim must be even (channels come in rotation pairs), got {args.dim}")
    if args.num_t < 2:
        raise UsageError(f"--num-t must be at least 2 (samples of t from 0 to 1), got {args.num_t}")
    check_fits(f"--dim {args.dim} x --num-t {args.num_t} ({args.dim // 2} lines of {args.num_t} points per curve)",
               plot_bytes(args.dim, args.num_t, len(args.methods)), host_memory())
    if missing("matplotlib"):
        raise UsageError(f"`dype-rope plot` draws with matplotlib: {install_hint('matplotlib')}")
    for m in args.methods:
        _config(args, m)
    _figure_path(args.output)
    from .plots import save_figure, schedule_figure

    fig = schedule_figure(
        dim=args.dim, theta=args.theta, base_len=args.base, target_len=args.target, methods=args.methods,
        lambda_s=args.lambda_s, lambda_t=args.lambda_t, yarn_modulation=args.yarn_modulation, num_t=args.num_t,
    )
    path = save_figure(fig, args.output)
    print(f"wrote {path} ({', '.join(args.methods)}; axis of {args.dim} channels, {args.base:g} -> {args.target:g} tokens)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    _config(args, args.method, not args.static)
    require("diffusers", "generate")
    from .generate import run_generate

    return run_generate(args)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.grids:  # the largest grid decides; checked on the host's memory before torch is even imported
        largest = max(args.grids)
        check_fits(f"--grids {largest} ({largest} x {largest} tokens, FLUX-shaped)",
                   bench_bytes(largest, 2, 512), host_memory())
    require("diffusers", "bench")
    from .bench import run_bench

    return run_bench(args)


def cmd_models(args: argparse.Namespace) -> int:
    from dype_rope.coverage import coverage, format_report, readme_table

    if args.readme:
        print(readme_table(), end="")
        return 0
    require("diffusers", "models")
    if args.comfyui:
        from dype_rope.coverage import import_comfyui

        import_comfyui(args.comfyui)
    print(format_report(coverage()))
    return 0


COMMANDS = {"demo": cmd_demo, "plot": cmd_plot, "generate": cmd_generate, "bench": cmd_bench, "models": cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command (or only demo options) runs the demo: `python -m dype_rope` is the quickest look.
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["demo", *argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"dype-rope: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dype-rope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
