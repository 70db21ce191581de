"""A check the per-sample test files share: a patched model compiles to one graph whatever its samples' times."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch._dynamo.testing

import dype_rope


def assert_one_graph_across_times(model, call: Callable, pairs: Sequence, base_grid) -> None:
    """`call(model, times)` runs `model` on a batch at `times`; every pair of times gives the eager result through
    one graph compiled with fullgraph=True."""
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounter()
    with dype_rope.patch(model, base_grid=base_grid):
        eager = [call(model, p) for p in pairs]
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for p, want in zip(pairs, eager):
            torch.testing.assert_close(call(compiled, p), want, rtol=1e-6, atol=1e-6)
    torch._dynamo.reset()
    assert counter.frame_count == 1
