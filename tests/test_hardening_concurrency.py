"""One patched model called from several threads at once: each call computes with its own timestep and ids.

A barrier inside the model (a pre-hook on the first module its forward runs, before the position embedding)
holds every thread until all of them have entered the call, so the calls overlap the same way on every run:
state shared between calls would be read by the wrong one every time, not now and then.
"""

from __future__ import annotations

import threading

import torch
import torch._dynamo.testing

import dype_rope
from families.flux import FLUX, tiny_flux
from families.zimage import ZIMAGE, tiny_zimage

THREADS = 4
ROUNDS = 10


def run(model, inputs):
    with torch.no_grad():
        out = model(**{**inputs, "return_dict": False})[0]
    return out if isinstance(out, torch.Tensor) else torch.cat([o.flatten() for o in out])  # Z-Image: a list


def overlapping_calls(model, gate: torch.nn.Module, inputs: list[dict]) -> list:
    """Run model(**inputs[i]) in thread i, all calls inside the model's forward together; returns the outputs
    (or the exceptions) in order."""
    barrier = threading.Barrier(len(inputs), timeout=60)
    def wait(*args):
        barrier.wait()  # returns the thread's index, which a pre-hook must not hand back as the input

    hook = gate.register_forward_pre_hook(wait)
    results: list = [None] * len(inputs)

    def call(i):
        try:
            results[i] = run(model, inputs[i])
        except Exception as e:  # noqa: BLE001 - reported by the test
            results[i] = e
            barrier.abort()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        hook.remove()
    return results


def mismatches(model, gate, inputs, expected) -> int:
    bad = 0
    for _ in range(ROUNDS):
        for got, want in zip(overlapping_calls(model, gate, inputs), expected):
            bad += not (isinstance(got, torch.Tensor) and torch.equal(got, want))
    return bad


def test_threads_calling_one_patched_flux_each_get_their_own_call():
    model = tiny_flux()
    # different times and different sizes: each call's plan depends on both
    sizes = [(12, 16), (16, 12), (10, 20), (20, 10)]
    inputs = [FLUX.inputs(sizes[i], 0.2 + 0.2 * i, seed=i) for i in range(THREADS)]
    with dype_rope.patch(model, base_grid=(8, 8)):
        expected = [run(model, x) for x in inputs]  # one at a time
        assert mismatches(model, model.x_embedder, inputs, expected) == 0
    stock = [run(model, x) for x in inputs]
    assert all(not torch.equal(a, b) for a, b in zip(expected, stock))  # the patch really acted on every call


def test_threads_calling_one_patched_zimage_each_get_their_own_grid():
    # Z-Image reads the generated grid from the call's arguments: that too belongs to the call
    model = tiny_zimage()
    sizes = [(12, 16), (16, 12), (10, 20), (20, 10)]
    inputs = [ZIMAGE.inputs(sizes[i], 0.2 + 0.2 * i, seed=i) for i in range(THREADS)]
    gate = model.t_embedder
    with dype_rope.patch(model, base_grid=(8, 8)):
        expected = [run(model, x) for x in inputs]
        assert mismatches(model, gate, inputs, expected) == 0


def test_stock_model_under_the_same_threads_is_exact():
    # the harness itself is deterministic: unpatched, the same overlapping calls match one-at-a-time calls
    model = tiny_flux()
    inputs = [FLUX.inputs((12, 16), 0.2 + 0.2 * i, seed=i) for i in range(THREADS)]
    expected = [run(model, x) for x in inputs]
    assert mismatches(model, model.x_embedder, inputs, expected) == 0


def test_a_compiled_patched_model_stays_one_graph_when_threads_call_it():
    # per-thread state must not split the compiled graph nor recompile it for another thread
    model = tiny_flux()
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    times = [1.0 - i / 12 for i in range(12)]
    with dype_rope.patch(model, base_grid=(8, 8)):
        expected = {t: run(model, FLUX.inputs((12, 16), t)) for t in times}
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for t in times:
            torch.testing.assert_close(run(compiled, FLUX.inputs((12, 16), t)), expected[t], rtol=1e-6, atol=1e-6)
        errors = []

        def worker(offset):
            for t in times[offset::THREADS]:
                got = run(compiled, FLUX.inputs((12, 16), t))
                if not torch.allclose(got, expected[t], rtol=1e-6, atol=1e-6):
                    errors.append(t)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert errors == []
    assert counter.frame_count == 1
