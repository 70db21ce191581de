"""Float64 references and inputs for the kernel tests, written from the definitions, not from dype_rope.rope."""

from __future__ import annotations

import torch

from dype_rope import DyPEConfig, build_plan

F64 = torch.float64
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def dype_plan(axes=(8, 12, 12), t=0.6, scales=(1.0, 3.0, 2.5), base=(1.0, 16.0, 16.0)):
    """A YaRN DyPE plan (float64): every channel pair has its own frequency and mscale != 1."""
    return build_plan(axes, 10000.0, torch.tensor(scales, dtype=F64), torch.tensor(t, dtype=F64),
                      DyPEConfig(method="yarn"), base)


def batched_plan(axes, ts):
    plans = [dype_plan(axes, t) for t in ts]
    return type(plans[0])(torch.stack([p.inv_freq for p in plans]), torch.stack([p.mscale for p in plans]),
                          plans[0].pair_axis)


def grid_positions(seq: int, n_axes: int = 3, high: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (seq, n_axes), generator=g).float()


def make_qk(shape_q, shape_k, dtype, sequence_dim, seed=0):
    """q, k of logical shape [B, L, H, D]; sequence_dim=2 gives [B, H, L, D] *views* of [B, L, H, D] storage,
    the layout attention code produces with .transpose(1, 2), so the kernels see non-contiguous strides."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(shape_q, generator=g).to(dtype)
    k = torch.randn(shape_k, generator=g).to(dtype)
    if sequence_dim == 2:
        q, k = q.transpose(1, 2), k.transpose(1, 2)
    return q, k


def pair_halves(x: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    if layout == "interleaved":
        return x[..., 0::2], x[..., 1::2]
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


def from_halves(a: torch.Tensor, b: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "interleaved":
        return torch.stack([a, b], dim=-1).flatten(-2)
    return torch.cat([a, b], dim=-1)


def _to_bldh(t: torch.Tensor, sequence_dim: int) -> torch.Tensor:
    """A per-token [B?, L, X] quantity broadcast against x in its layout: [B, L, 1, X] or [B, 1, L, X]."""
    if t.dim() == 2:
        t = t.unsqueeze(0)
    return t.unsqueeze(2) if sequence_dim == 1 else t.unsqueeze(1)


def ref_angles(positions: torch.Tensor, plan) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 angles [B?, L, D/2] and mscale [B?, 1, D/2]."""
    pos = positions.to(F64)[..., plan.pair_axis]
    inv = plan.inv_freq.to(F64)
    angles = pos * (inv.unsqueeze(-2) if inv.dim() == 2 else inv)
    ms = plan.mscale.to(F64)
    return angles, (ms.unsqueeze(-2) if ms.dim() == 2 else ms)


def ref_rope(x: torch.Tensor, positions, plan, layout: str, sequence_dim: int, sign: float = 1.0) -> torch.Tensor:
    """Float64 rotation of x by the plan's angles at positions (sign=-1: the inverse direction)."""
    angles, ms = ref_angles(positions, plan)
    cos = _to_bldh(angles.cos() * ms, sequence_dim)
    sin = _to_bldh(angles.sin() * ms, sequence_dim) * sign
    a, b = pair_halves(x.to(F64), layout)
    return from_halves(a * cos - b * sin, b * cos + a * sin, layout)


def ref_rope_tables(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str, sequence_dim: int):
    """Float64 per-channel table rotation: out_a = a cos_a - b sin_a, out_b = b cos_b + a sin_b."""
    ca, cb = (_to_bldh(t, sequence_dim) for t in pair_halves(cos.to(F64), layout))
    sa, sb = (_to_bldh(t, sequence_dim) for t in pair_halves(sin.to(F64), layout))
    a, b = pair_halves(x.to(F64), layout)
    return from_halves(a * ca - b * sa, b * cb + a * sb, layout)


def ref_rms_norm(x: torch.Tensor, weight, eps: float) -> torch.Tensor:
    x = x.to(F64)
    y = x / torch.sqrt(x.square().mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight.to(F64)


def assert_close_to_ref(out: torch.Tensor, ref: torch.Tensor) -> None:
    """Tolerance from the output dtype's own rounding: one ulp of the stored value (the interpreter truncates
    instead of rounding) plus float32 arithmetic noise on the reduced angle and the products."""
    assert out.dtype in KERNEL_DTYPES
    eps = torch.finfo(out.dtype).eps
    tol = eps * ref.abs() + 8 * torch.finfo(torch.float32).eps * ref.abs().max()
    err = (out.to(F64) - ref).abs()
    bad = err > tol
    assert not bad.any(), f"{int(bad.sum())} elements off; worst error {err.max():.3g} (tolerance there {tol.flatten()[err.argmax()]:.3g})"
