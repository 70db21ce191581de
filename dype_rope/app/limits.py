"""What a command would allocate, estimated from its arguments before any work, against what the machine has.

Each estimate counts the arrays the command builds per token (or per plotted point), a lower bound of its real
peak: an argument refused here could never have run, and one accepted is at least not hopeless. A refusal is a
usage error (one line, exit status 2) saying how much the arguments ask for and how much there is.
"""

from __future__ import annotations

import os

from .errors import UsageError

GIB = 2**30
FLOAT32 = 4
# Bytes per token of one forward of the demo's tiny FLUX (hidden 64, head dim 32): the latent and its
# projections, q / k / v, the MLP (4x hidden) and the float32 cos / sin tables of the token, for the stock and
# the patched model the demo runs side by side.
DEMO_BYTES_PER_TOKEN = 2 * FLOAT32 * (16 * 4 + 64 * 12 + 32 * 2)
DEMO_TEXT_TOKENS = 8
# FLUX's hidden size (24 heads x 128) and the activations one block keeps per token: q, k, v, the attention
# output, the MLP (4x), norms and residuals, about 16 hidden-sized vectors.
FLUX_HIDDEN = 24 * 128
FLUX_VECTORS_PER_TOKEN = 16
# One plotted point: t and the frequency in float64 in the curve, the segment array, matplotlib's own copies
# of the segments and the Agg path it draws from.
PLOT_BYTES_PER_POINT = 64


def host_memory() -> int:
    """Physical memory of this machine in bytes (what no allocation can exceed); 0 where it cannot be read."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 0


def check_fits(what: str, nbytes: float, budget: int, where: str = "this machine's memory") -> None:
    """Raise a UsageError where `nbytes` exceeds `budget` (a budget of 0, unknown, lets everything through)."""
    if budget and nbytes > budget:
        raise UsageError(
            f"{what} would allocate about {nbytes / GIB:,.1f} GiB, more than {where} ({budget / GIB:,.1f} GiB); "
            "choose smaller sizes"
        )


def demo_bytes(base_grid: int, factor: tuple[int, int]) -> float:
    """The demo's image is (base_grid * rows factor) x (base_grid * columns factor) tokens."""
    tokens = base_grid * factor[0] * base_grid * factor[1] + DEMO_TEXT_TOKENS
    return float(tokens) * DEMO_BYTES_PER_TOKEN


def bench_bytes(grid: int, element_bytes: int, text_tokens: int) -> float:
    """One forward of the FLUX-shaped model on a grid x grid image (two models live: stock and patched)."""
    tokens = grid * grid + text_tokens
    return 2.0 * tokens * FLUX_HIDDEN * FLUX_VECTORS_PER_TOKEN * element_bytes


def plot_bytes(dim: int, num_t: int, n_methods: int) -> float:
    """One line per channel pair over num_t times for each method, static and dynamic, and plain RoPE."""
    curves = 2 * n_methods + 1
    return float(dim // 2) * num_t * curves * PLOT_BYTES_PER_POINT + float(num_t) * curves * PLOT_BYTES_PER_POINT
