"""DyPE under diffusers context parallelism on several GPUs: the sharded run equals the single-GPU one.

    torchrun --nproc_per_node=2 benchmarks/cp_check.py                       # Ulysses, FLUX and Wan
    torchrun --nproc_per_node=2 benchmarks/cp_check.py --mode ring            # ring attention
    torchrun --nproc_per_node=2 benchmarks/cp_check.py --mode ulysses_anything --grid 45 61

Every rank builds the same seeded FLUX- and Wan-shaped transformers from their configs (2 blocks, random
weights, real head sizes and RoPE axes), patches them with Dy-YaRN at a base grid half the image grid per
side, and runs one call without parallelism (the reference) and one with `enable_parallelism`. For Wan the
second model enables parallelism *before* patching, to check that the rotary module keeps its sharding
hooks either way. Each rank prints the largest difference; the script exits non-zero when any exceeds the
tolerance, or when DyPE's change of the output does not stand clear of that difference (DyPE inactive).

Ring attention needs an attention backend that returns the log-sum-exp (flash, _native_cudnn, sage);
--backend picks it (default: native for Ulysses, _native_cudnn for ring). The CPU part of this check,
Ulysses over gloo, runs in the test suite (tests/test_context_parallel.py).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist

import dype_rope

FLUX = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128,
            num_attention_heads=8, joint_attention_dim=256, pooled_projection_dim=128, axes_dims_rope=(16, 56, 56))
WAN = dict(patch_size=(1, 2, 2), num_attention_heads=8, attention_head_dim=128, in_channels=16, out_channels=16,
           text_dim=256, freq_dim=256, ffn_dim=1024, num_layers=2)


def seeded(cls, config, device, dtype):
    torch.manual_seed(0)
    return cls(**config).to(device, dtype).eval()


def flux_inputs(rows: int, cols: int, text_len: int, device, dtype):
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(rows * cols, 3)
    ids[:, 1] = torch.arange(rows).repeat_interleave(cols)
    ids[:, 2] = torch.arange(cols).repeat(rows)
    return dict(
        hidden_states=torch.randn(1, rows * cols, FLUX["in_channels"], generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(1, text_len, FLUX["joint_attention_dim"], generator=g).to(device, dtype),
        pooled_projections=torch.randn(1, FLUX["pooled_projection_dim"], generator=g).to(device, dtype),
        timestep=torch.tensor([0.7], device=device, dtype=dtype),
        img_ids=ids.to(device),
        txt_ids=torch.zeros(text_len, 3, device=device),
        return_dict=False,
    )


def wan_inputs(frames: int, rows: int, cols: int, device, dtype):
    g = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(1, WAN["in_channels"], frames, 2 * rows, 2 * cols, generator=g).to(device, dtype),
        timestep=torch.tensor([700], device=device),
        encoder_hidden_states=torch.randn(1, 16, WAN["text_dim"], generator=g).to(device, dtype),
        return_dict=False,
    )


def call(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0].clone().float()


def compare(name: str, model_builder, inputs, base_grid, config, backend, patch_first: bool, tol: float) -> bool:
    stock = call(model_builder(), inputs)
    reference_model = model_builder()
    with dype_rope.patch(reference_model, base_grid=base_grid):
        reference = call(reference_model, inputs)
    model = model_builder()
    model.set_attention_backend(backend)
    if patch_first:
        handle = dype_rope.patch(model, base_grid=base_grid)
        model.enable_parallelism(config=config)
    else:
        model.enable_parallelism(config=config)
        handle = dype_rope.patch(model, base_grid=base_grid)
    sharded = call(model, inputs)
    handle.remove()
    err = (sharded - reference).abs().max().item()
    active = (reference - stock).abs().max().item()
    ok = err <= tol and active > 4 * err  # DyPE's change stands clear of the sharding noise
    print(f"rank {dist.get_rank()} {name:<28} max |sharded - single| = {err:.2e}  "
          f"(DyPE changed the output by {active:.2e})  {'ok' if ok else 'FAIL'}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["ulysses", "ring", "ulysses_anything"], default="ulysses")
    parser.add_argument("--backend", default=None, help="attention backend (default: native / _native_cudnn for ring)")
    parser.add_argument("--grid", type=int, nargs=2, default=(64, 96), help="FLUX image grid in tokens")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()

    from diffusers import ContextParallelConfig, FluxTransformer2DModel, WanTransformer3DModel

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    device, dtype = torch.device("cuda" if cuda else "cpu"), getattr(torch, args.dtype)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    backend = args.backend or ("_native_cudnn" if args.mode == "ring" else "native")
    degrees = dict(ring_degree=world) if args.mode == "ring" else dict(ulysses_degree=world)
    if args.mode == "ulysses_anything":
        degrees["ulysses_anything"] = True

    rows, cols = args.grid
    text_len = 8 * world if args.mode != "ulysses_anything" else 8 * world + 1
    ok = compare(f"flux {args.mode}", lambda: seeded(FluxTransformer2DModel, FLUX, device, dtype),
                 flux_inputs(rows, cols, text_len, device, dtype), (rows // 2, cols // 2),
                 ContextParallelConfig(**degrees), backend, True, tol)
    for patch_first in (True, False):
        order = "patch first" if patch_first else "parallelism first"
        ok &= compare(f"wan {args.mode}, {order}", lambda: seeded(WanTransformer3DModel, WAN, device, dtype),
                      wan_inputs(3, rows // 2, cols // 2, device, dtype), (rows // 4, cols // 4),
                      ContextParallelConfig(**degrees), backend, patch_first, tol)
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
