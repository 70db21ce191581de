"""A real two-process run of diffusers' context parallelism (gloo, CPU) on patched tiny FLUX and Wan models,
compared with the single-process result.

diffusers 0.42 runs its Ulysses attention over gloo on CPU, with one exception:
`enable_parallelism` picks the rank's device as `rank % torch.accelerator.device_count()`, which divides by
zero on a machine without an accelerator. Each worker therefore reports one device for the duration of that
call only; everything after it (the sharding hooks, the all-to-all and all-gather collectives, the attention)
is diffusers' own code. Ring attention cannot run here: it needs the attention's log-sum-exp, which only
the GPU backends return (diffusers' "native" backend raises "does not support return_lse=True"); uneven
shards (`ulysses_anything`) reach the final all-gather, which gloo refuses for tensors of unequal sizes.
The single-process property tests in tests/test_shards.py cover uneven shards.
docs/distributed.md has the details; benchmarks/cp_check.py runs both on GPUs with torchrun.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import dype_rope
from families.flux import flux_inputs, tiny_flux
from families.video import WAN, tiny_wan

WORLD = 2


def enable_context_parallel(model, **degrees) -> None:
    from diffusers import ContextParallelConfig

    with mock.patch.object(torch.accelerator, "device_count", return_value=1):
        model.enable_parallelism(config=ContextParallelConfig(**degrees))


def run(model, inputs):
    with torch.no_grad():
        # The gathered output may still be an asynchronous collective: any op on it waits, cloning included.
        return model(**{**inputs, "return_dict": False})[0].clone()


def worker(rank: int, rendezvous: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)
    try:
        results = {}
        flux_cases = {"ulysses": (dict(ulysses_degree=WORLD), flux_inputs(6, 8, t=0.6, text_len=4))}
        for mode, (degrees, flux_x) in flux_cases.items():
            model = tiny_flux()
            results[f"flux plain {mode}"] = run(model, flux_x)
            with dype_rope.patch(model, base_grid=(4, 4)):
                results[f"flux single {mode}"] = run(model, flux_x)
                enable_context_parallel(model, **degrees)
                results[f"flux parallel {mode}"] = run(model, flux_x)

        wan_x = WAN.inputs((2, 4, 6), 0.6)
        for order in ("patch first", "parallelism first"):
            model = tiny_wan()
            results[f"wan plain {order}"] = run(model, wan_x)
            with dype_rope.patch(model, base_grid=(2, 3)):
                results[f"wan single {order}"] = run(model, wan_x)
            if order == "patch first":
                handle = dype_rope.patch(model, base_grid=(2, 3))
                enable_context_parallel(model, ulysses_degree=WORLD)
            else:
                enable_context_parallel(model, ulysses_degree=WORLD)
                handle = dype_rope.patch(model, base_grid=(2, 3))
            results[f"wan parallel {order}"] = run(model, wan_x)
            handle.remove()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_context_parallel_matches_one_process(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        r = torch.load(tmp_path / f"rank{rank}.pt")
        cases = [("flux", "ulysses")]
        cases += [("wan", o) for o in ("patch first", "parallelism first")]
        for family, how in cases:
            single, parallel, plain = (r[f"{family} {kind} {how}"] for kind in ("single", "parallel", "plain"))
            assert parallel.shape == single.shape
            torch.testing.assert_close(parallel, single, rtol=1e-5, atol=1e-5, msg=f"{family}, {how}, rank {rank}")
            # DyPE really was active: the grids exceed the base, so the stock model gives something else
            assert (single - plain).abs().max() > 1e-3, f"{family}, {how}"
