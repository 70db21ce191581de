"""Model-level overhead of DyPE: patched / stock step time of a FLUX-shaped transformer.

    python benchmarks/bench_model.py                      # CPU: small grids; GPU: 1, 4 and 16 MP
    python benchmarks/bench_model.py --write-results      # also update benchmarks/RESULTS.md

Same weights, same inputs, same run: the stock diffusers FluxTransformer2DModel (24 heads x 128, RoPE axes
16/56/56, 1 double + 1 single block, random weights) and a patched copy (Dy-YaRN, base grid a quarter of
the image grid per side) alternate call by call. Backends: torch everywhere, triton on CUDA.
Goals: <= 1.00x with the torch backend on GPU, <= 0.95x with the fused kernel, <= 1.03x on CPU.

The patched step does the stock table work (float64 angles, float32 cos/sin, as diffusers' FluxPosEmbed) plus
building the per-pair plan from t (a few dozen tiny ops); the last column shows that extra time.
"""

from __future__ import annotations

import argparse
import datetime
import re
from pathlib import Path

import torch

from dype_rope.app.bench import device_name, format_kernel_table, format_model_table, kernel_timings, model_overhead

SECTION = "## Model-level overhead"
RESULTS = Path(__file__).with_name("RESULTS.md")
GOALS = {("cpu", "torch"): 1.03, ("cuda", "torch"): 1.00, ("cuda", "triton"): 0.95}


GPU_UNMEASURED = (
    "Not measured yet: no GPU was at hand. On a CUDA machine, `python benchmarks/bench_model.py --write-results` "
    "measures 1, 4 and 16 MP (grids 64, 128, 256 tokens per side, 512 text tokens, bfloat16) with the torch and "
    "triton backends against the goals <= 1.00x (torch) and <= 0.95x (triton), and replaces this subsection."
)


def replace_section(text: str, title: str, body: str) -> str:
    """`text` with the Markdown section `title` ("## X" or "### X", up to the next heading of the same or a
    higher level) replaced by `body`, or appended when absent; everything else is left byte for byte."""
    level = len(title) - len(title.lstrip("#"))
    stop = "|".join("#" * n + " " for n in range(1, level + 1))
    block = f"{title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(title)}[ \t]*\n.*?(?=^(?:{stop})|\Z)", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: block + "\n", text, count=1).rstrip("\n") + "\n"
    head = text.rstrip("\n")
    return (head + "\n\n" if head else "# Benchmark results\n\n") + block


def section_body(text: str, title: str) -> str:
    """The body of section `title` in `text` ('' when absent)."""
    level = len(title) - len(title.lstrip("#"))
    stop = "|".join("#" * n + " " for n in range(1, level + 1))
    found = re.search(rf"^{re.escape(title)}[ \t]*\n(.*?)(?=^(?:{stop})|\Z)", text, re.S | re.M)
    return found.group(1).strip() if found else ""


def update_results(text: str, device_type: str, report_text: str) -> str:
    """RESULTS.md with the "### CPU" or "### GPU" subsection of the model-level section replaced; the other
    subsection is kept, or marked unmeasured if it never existed; other sections are untouched."""
    body = section_body(text, SECTION)
    if not body:
        body = f"### CPU\n\nNot measured yet.\n\n### GPU\n\n{GPU_UNMEASURED}\n"
    sub = "### GPU" if device_type == "cuda" else "### CPU"
    return replace_section(text, SECTION, replace_section(body, sub, report_text))


def report(rows, kernel_rows, device: torch.device, repeats: int) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        f"Device: {device_name(device)}; torch {torch.__version__}; {today}. "
        "Command: `python benchmarks/bench_model.py --write-results`.",
        f"FLUX-shaped transformer (24 heads x 128, axes 16/56/56, 1 double + 1 single block, random weights), "
        f"Dy-YaRN with the base grid a quarter of the image grid per side; {repeats} alternating rounds, "
        "ratio = median over rounds of patched / stock.",
        "",
        format_model_table(rows),
        "",
    ]
    for r in rows:
        goal = GOALS.get((torch.device(r.device).type, r.backend))
        if goal is not None:
            verdicts = ["meets" if v <= goal else "misses" for v in (r.ratio, r.best_ratio)]
            lines.append(
                f"- {r.backend} {r.grid}x{r.grid}: paired median {r.ratio:.3f}x ({verdicts[0]}), best of each "
                f"{r.best_ratio:.3f}x ({verdicts[1]}) against the goal <= {goal:.2f}x"
            )
    lines += [
        "",
        "Where the difference comes from: the patched model replaces only FluxPosEmbed; attention still applies "
        "the tables with diffusers' apply_rotary_emb. So its extra work per step is the 'tables' group below: "
        "building the per-pair plan from t (a few dozen tiny ops) and the tables from it, against FluxPosEmbed's "
        "tables (both compute angles in float64 and cast cos/sin to float32). 'tables + q,k' adds the rotation "
        "of q and k [1, L, 24, 128].",
        "",
    ]
    for r in rows:
        if r.backend != "torch":
            continue
        tables = {k["impl"]: k["ms"] for k in kernel_rows if k["tokens"] == r.tokens and k["work"] == "tables"}
        extra = tables["dype torch"] - tables["diffusers"]
        lines.append(
            f"- {r.grid}x{r.grid} ({r.tokens} tokens): patched tables cost {extra:+.3f} ms over stock, i.e. an expected "
            f"ratio of {1 + extra / r.stock_ms:.4f}x on a {r.stock_ms:.0f} ms step; the measured patched - stock "
            f"({r.extra_ms:+.2f} ms) is that plus the run-to-run noise of the machine."
        )
    lines += [
        "",
        format_kernel_table(kernel_rows),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grids", default=None, help="tokens per side, comma-separated (CPU 8,16; GPU 64,128,256)")
    parser.add_argument("--repeats", type=int, default=None, help="alternating rounds (CPU 15, GPU 20)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads (default 1: on a shared machine one busy core stalls every multi-threaded op, which "
        "swamps the difference being measured)",
    )
    parser.add_argument("--write-results", action="store_true", help=f"replace the '{SECTION}' section of RESULTS.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    grids = [int(g) for g in args.grids.split(",")] if args.grids else ([64, 128, 256] if gpu else [8, 16])
    repeats = args.repeats or (20 if gpu else 15)
    from dype_rope.kernels import triton_available

    backends = ["torch", "triton"] if gpu and triton_available() else ["torch"]
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    rows = model_overhead(grids, device, backends, repeats)
    kernel_rows = kernel_timings(grids, device, 200)
    text = report(rows, kernel_rows, device, repeats)
    print(text)
    if args.write_results:
        old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""  # re-read: others edit it too
        RESULTS.write_text(update_results(old, device.type, text), encoding="utf-8")
        print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
