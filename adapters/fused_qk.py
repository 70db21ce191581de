"""What the fused attention processors share: QK-RMSNorm + RoPE in one kernel launch where the norms allow it,
and the reversible swap of a model's stock processors for them (every family with a backend="triton" path).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from dype_rope.kernels import rms_norm_rope_qk, rope_qk
from dype_rope.rope import RopePlan

try:
    from diffusers.models.normalization import RMSNorm as DiffusersRMSNorm
except ImportError:  # pragma: no cover - exercised only without diffusers
    DiffusersRMSNorm = None


def rms_norm_weight(norm: nn.Module | None, head_dim: int, dtype: torch.dtype) -> tuple[bool, Tensor | None, float]:
    """(fusable, weight, eps) of a per-head RMSNorm the kernel can take in place of `norm`.

    diffusers' RMSNorm without bias and torch's nn.RMSNorm over the head dim qualify (they differ only in where
    they round, which the kernel does once, in float32); anything else is applied as a module.
    """
    if DiffusersRMSNorm is not None and type(norm) is DiffusersRMSNorm and norm.bias is None \
            and tuple(norm.dim) == (head_dim,):
        return True, norm.weight, float(norm.eps)
    if type(norm) is nn.RMSNorm and tuple(norm.normalized_shape) == (head_dim,):
        # nn.RMSNorm's eps=None means the input dtype's machine epsilon
        return True, norm.weight, torch.finfo(dtype).eps if norm.eps is None else float(norm.eps)
    return False, None, 0.0


def norm_rope(norm_q: nn.Module | None, norm_k: nn.Module | None, q: Tensor, k: Tensor, positions: Tensor,
              plan: RopePlan, backend: str) -> tuple[Tensor, Tensor]:
    """norm_q(q), norm_k(k) rotated by the plan at `positions` ([B, L, H, D] q and k, interleaved pairs)."""
    head_dim = q.shape[-1]
    fuse_q, w_q, eps_q = rms_norm_weight(norm_q, head_dim, q.dtype)
    fuse_k, w_k, eps_k = rms_norm_weight(norm_k, head_dim, k.dtype)
    if fuse_q and fuse_k and (w_q is None) == (w_k is None):
        return rms_norm_rope_qk(q, k, w_q, w_k, positions, plan, (eps_q, eps_k), "interleaved", 1, backend=backend)
    q = q if norm_q is None else norm_q(q)
    k = k if norm_k is None else norm_k(k)
    return rope_qk(q, k, positions, plan, "interleaved", 1, backend=backend)


class FusedProcessor:
    """Mixin of the fused attention processors: where the call's plan comes from, and which kernels to run.

    Listed before the stock processor class, so the stock __init__ still runs."""

    def __init__(self, plan_of_call: Callable[[], RopePlan], backend: str = "triton") -> None:
        super().__init__()
        self.plan_of_call = plan_of_call
        self.backend = backend


def stock_attentions(model: nn.Module, attention_types: tuple[type, ...], fused_for: dict[type, type]) -> list:
    """Every attention module of `attention_types` in `model`, after checking that each still runs a stock
    processor that has a fused counterpart in `fused_for`: anything else (IP-Adapter, a user's processor) would
    receive positions it cannot read, so it is refused before the model is touched."""
    attentions = [(name, m) for name, m in model.named_modules() if isinstance(m, attention_types)]
    stock = ", ".join(cls.__name__ for cls in fused_for)
    for name, attn in attentions:
        if type(attn.processor) not in fused_for:
            raise TypeError(
                f"backend='triton' fuses RoPE into diffusers' {stock} only, but {name} uses "
                f"{type(attn.processor).__name__}; patch with backend='torch' or restore the default processor"
            )
    return [m for _, m in attentions]


def swap_processors(adapter, attentions: list, fused_for: dict[type, type], *args) -> None:
    """Give every attention the fused counterpart of its processor (built with `*args`), reversibly."""
    for attn in attentions:
        original = attn.processor
        fused = fused_for[type(original)](*args)
        # the attention backend and the context-parallel settings live on the processor instance
        fused._attention_backend = original._attention_backend
        fused._parallel_config = original._parallel_config
        attn.processor = fused
        adapter.on_remove(lambda attn=attn, original=original: setattr(attn, "processor", original))


def plan_of_step(adapter):
    """The processors' view of the call's plan, which the position encoding built earlier in the same call."""
    def plan_of_call():
        step = adapter.step  # the calling thread's
        if step.plan is None:
            raise adapter.outside_forward()
        return step.plan

    return plan_of_call
