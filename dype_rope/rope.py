"""N-axis rotary position embedding: per-pair frequency plans, cos/sin tables, and the pure-torch rotation.

A RoPE head of dimension D is split into axes (`axes_dims`, summing to D); pair j of the head reads the
position of axis `pair_axis[j]` and turns at `inv_freq[j]`, with its cos and sin multiplied by `mscale[j]`
(YaRN's attention temperature). That per-pair *plan* is all a kernel needs: it is D/2 numbers per step,
where a cos/sin table is L * D.

Layouts (how the D channels of a head form D/2 rotation pairs):
  "interleaved": pairs (x[2j], x[2j+1]) -- FLUX, complex-number models, diffusers' use_real_unbind_dim=-1.
  "half":        pairs (x[j], x[j + D/2]) -- rotate_half models, diffusers' use_real_unbind_dim=-2.

The table path follows diffusers' FluxPosEmbed + apply_rotary_emb operation by operation (positions via
float32, frequencies and angles in float64 where the device has it, cos/sin cast to float32, q/k rotated in
float32), so at s <= 1 it reproduces them bit for bit.

`build_plan`, `plain_plan` and `rope_tables` are written over the array API (dype_rope.backend,
docs/backends.md) and take arrays of torch, numpy, JAX, MLX or any array-API library; the rotation itself
(`apply_rope`, `rotate_pairs`) is torch's.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

try:
    import torch
    from torch import Tensor
except ImportError:  # the array-API core runs without torch; apply_rope and freq_dtype need it
    torch = None
    Tensor = Any

from .backend import device as device_of
from .backend import index_dtype, namespace
from .config import DyPEConfig
from .schedules import GLOBAL_SCALE_SCHEDULES, get_schedule, plain

LAYOUTS = ("interleaved", "half")

# Devices without float64 arithmetic (diffusers' maybe_adjust_dtype_for_device makes the same choice).
_NO_FLOAT64 = ("mps", "npu")


class RopePlan(NamedTuple):
    """Per-pair rotation plan of one head: inv_freq [..., D/2], mscale [..., D/2], pair_axis [D/2] (int64, or the
    library's index dtype where it has no int64: JAX without x64), all arrays of one library."""

    inv_freq: Tensor
    mscale: Tensor
    pair_axis: Tensor


def freq_dtype(device: torch.device | str) -> torch.dtype:
    return torch.float32 if torch.device(device).type in _NO_FLOAT64 else torch.float64


def check_axes_dims(axes_dims: Sequence[int], head_dim: int | None = None) -> tuple[int, ...]:
    dims = tuple(int(d) for d in axes_dims)
    if not dims:
        raise ValueError("axes_dims must name at least one axis")
    for i, d in enumerate(dims):
        if d <= 0 or d % 2:
            raise ValueError(f"every RoPE axis needs a positive even number of channels; axis {i} has {d}")
    if head_dim is not None and sum(dims) != head_dim:
        raise ValueError(f"axes_dims {list(dims)} sum to {sum(dims)}, but the attention head dim is {head_dim}")
    return dims


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown RoPE layout {layout!r}: expected one of {LAYOUTS}")
    return layout


def build_plan(
    axes_dims: Sequence[int],
    theta: float,
    scales: Tensor,
    t: Tensor,
    cfg: DyPEConfig,
    base_lens: Sequence[float] | None = None,
    rescaled_axes: Sequence[int] | None = None,
) -> RopePlan:
    """Frequencies of every pair for per-axis size ratios `scales` [..., n_axes] at diffusion time `t` [...].

    An axis whose scale is <= 1 (including every axis the caller never rescales: pass 1) gets plain RoPE bit
    for bit, except under a schedule that couples the axes (vision_yarn): there the image's global ratio, the
    largest over `rescaled_axes` (default: every axis), reaches every rescaled axis, and the axes outside
    `rescaled_axes` get plain RoPE. `base_lens[a]` is the training token count of axis a (YaRN's L); it only
    matters for YaRN. The arithmetic runs in the dtype of `scales`, in the library of `scales` (`t` may be a
    Python number).
    """
    dims = check_axes_dims(axes_dims)
    xp = namespace(scales)
    if scales.shape[-1] != len(dims):
        raise ValueError(f"scales has {scales.shape[-1]} axes but axes_dims has {len(dims)}")
    base_lens = [1.0] * len(dims) if base_lens is None else [float(b) for b in base_lens]
    schedule = get_schedule(cfg.method)
    device = device_of(scales)
    if isinstance(t, (int, float)):
        t = xp.asarray(float(t), dtype=scales.dtype, device=device)
    elif namespace(t) is not xp:
        raise TypeError(f"t is an array of {type(t).__module__}, scales one of {type(scales).__module__}: "
                        "pass both from one library")
    t = xp.astype(t, scales.dtype)
    rescaled = range(len(dims)) if rescaled_axes is None else tuple(rescaled_axes)
    coupled = {}
    if cfg.method in GLOBAL_SCALE_SCHEDULES:  # a set of names: a constant under torch.compile
        if not rescaled:
            raise ValueError(f"method {cfg.method!r} needs at least one rescaled axis")
        coupled["global_scale"] = xp.max(xp.stack([scales[..., a] for a in rescaled], axis=-1), axis=-1)
    inv, ms = [], []
    for a, dim in enumerate(dims):
        if rescaled_axes is not None and coupled and a not in rescaled:
            inv_a, ms_a = plain(dim, theta, base_lens[a], scales[..., a], t, cfg)
        else:
            inv_a, ms_a = schedule(dim, theta, base_lens[a], scales[..., a], t, cfg, **coupled)
        inv.append(inv_a)
        ms.append(xp.broadcast_to(ms_a[..., None], (*ms_a.shape, dim // 2)))
    # Filled on the device: a host list copied over would stall the stream every step.
    index = index_dtype(xp)
    pair_axis = xp.concat([xp.full((d // 2,), a, dtype=index, device=device) for a, d in enumerate(dims)])
    return RopePlan(xp.concat(inv, axis=-1), xp.concat(ms, axis=-1), pair_axis)


def plain_plan(axes_dims: Sequence[int], theta: float, device=None, dtype=None, like=None) -> RopePlan:
    """The plan of unmodified RoPE: torch tensors on `device` (default CPU) in `dtype` (default float64 where
    the device has it), or, with `like` an array of any library, arrays of that library in `dtype` (default
    like's dtype) on like's device."""
    n = len(axes_dims)
    if like is None:
        if torch is None:
            raise ImportError("plain_plan without `like` makes torch tensors; pass like=<an array> to use another library")
        device = torch.device("cpu") if device is None else torch.device(device)
        dtype = dtype or freq_dtype(device)
        one = torch.ones((), dtype=dtype, device=device)
        return build_plan(axes_dims, theta, one.expand(n), one, DyPEConfig(method="none"))
    xp = namespace(like)
    one = xp.ones((), dtype=dtype or like.dtype, device=device if device is not None else device_of(like))
    return build_plan(axes_dims, theta, xp.broadcast_to(one, (n,)), one, DyPEConfig(method="none"))


def _expand_pairs(x, layout: str):
    """[..., D/2] per-pair values -> [..., D] per-channel values in the given layout."""
    xp = namespace(x)
    if layout == "interleaved":
        return xp.repeat(x, 2, axis=-1)
    return xp.concat([x, x], axis=-1)


def rope_tables(positions, plan: RopePlan, layout: str = "interleaved"):
    """cos and sin tables [..., L, D] (float32) for positions [..., L, n_axes] under `plan`.

    A batched plan ([B, D/2]) with positions [L, n_axes] or [B, L, n_axes] gives tables [B, L, D].
    Positions and plan are arrays of one library; the tables are too.
    """
    check_layout(layout)
    inv_freq, mscale, pair_axis = plan
    xp = namespace(inv_freq)
    pos = plan_positions(xp, positions, inv_freq.dtype)
    angles = xp.take(pos, pair_axis, axis=-1) * inv_freq[..., None, :]
    mscale = mscale[..., None, :]
    cos = xp.astype(_expand_pairs(xp.cos(angles) * mscale, layout), xp.float32)
    sin = xp.astype(_expand_pairs(xp.sin(angles) * mscale, layout), xp.float32)
    return cos, sin


def plan_positions(xp, positions, dtype):
    """Positions in the plan's dtype, passed through float32 as FluxPosEmbed's `ids.float()` does (exact for
    integer ids below 2**24); float64 positions are kept as they are."""
    if namespace(positions) is not xp:
        raise TypeError(f"positions are an array of {type(positions).__module__}, the plan of another library: "
                        "pass both from one library")
    pos = positions if positions.dtype == xp.float64 else xp.astype(positions, xp.float32)
    return xp.astype(pos, dtype)


def _broadcast_table(table: Tensor, x: Tensor, sequence_dim: int) -> Tensor:
    """Align a [L, D] or [B, L, D] table with x of shape [B, L, H, D] (sequence_dim=1) or [B, H, L, D] (2)."""
    if table.dim() == 2:
        table = table.unsqueeze(0)
    if sequence_dim == 1:
        return table.unsqueeze(2)
    if sequence_dim == 2:
        return table.unsqueeze(1)
    raise ValueError(f"sequence_dim must be 1 ([B, L, H, D]) or 2 ([B, H, L, D]), got {sequence_dim}")


def rotate_pairs(x: Tensor, layout: str = "interleaved") -> Tensor:
    """The 90-degree rotation of every pair: (a, b) -> (-b, a)."""
    if layout == "interleaved":
        real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
        return torch.stack([-imag, real], dim=-1).flatten(-2)
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(
    x: Tensor, cos: Tensor, sin: Tensor, layout: str = "interleaved", sequence_dim: int = 1
) -> Tensor:
    """Rotate x ([B, L, H, D] with sequence_dim=1, [B, H, L, D] with 2) by float32 tables [L, D] / [B, L, D].

    Computed in float32 and cast back to x's dtype, the same expression as diffusers' apply_rotary_emb.
    """
    check_layout(layout)
    if x.shape[-1] % 2:
        raise ValueError(f"RoPE needs an even head dim, got {x.shape[-1]}")
    if cos.shape[-1] != x.shape[-1] or sin.shape != cos.shape:
        raise ValueError(f"tables of shape {tuple(cos.shape)}/{tuple(sin.shape)} do not fit x of shape {tuple(x.shape)}")
    cos = _broadcast_table(cos, x, sequence_dim).to(x.device)
    sin = _broadcast_table(sin, x, sequence_dim).to(x.device)
    return (x.float() * cos + rotate_pairs(x, layout).float() * sin).to(x.dtype)


def apply_rope_plan(
    x: Tensor, positions: Tensor, plan: RopePlan, layout: str = "interleaved", sequence_dim: int = 1
) -> Tensor:
    """Reference for the fused kernels: rotate x by the plan's angles at `positions` [L, n] or [B, L, n]."""
    cos, sin = rope_tables(positions, plan, layout)
    return apply_rope(x, cos, sin, layout, sequence_dim)
