"""Mechanism for interleaved multimodal RoPE (Ideogram 4's Ideogram4MRoPE): forward(position_ids [B, L, 3]) ->
(cos, sin) [B, L, D], pair j at channels j and j + D/2 (rotate_half).

Every pair j = 0 .. D/2 - 1 turns at base^(-2j / D), like 1-D RoPE over the whole head, and reads one of the three
axes (t, h, w) of the position ids: h where j % 3 == 1 and j < 3 n_h, w where j % 3 == 2 and j < 3 n_w, t on every
other pair (n_a = `mrope_section[a]`). The pairs of axis a (offset a = 1 for h, 2 for w), m = 0 .. n_a - 1, turn at

    base^(-2 (3m + a) / D) = c_a * theta_a^(-2m / (2 n_a)),   theta_a = base^(6 n_a / D),   c_a = base^(-2a / D):

standard RoPE on 2 n_a channels with theta theta_a over positions c_a * p. DyPE's schedules act on that form of
each spatial axis, YaRN's base length the base grid in tokens times c_a (docs/families.md). The t pairs (the text
index; one value for every image token) are never rescaled.

The stock module is called and every pair DyPE does not move keeps its number (torch.where on the device), so at
or below the base grid the tables are the module's own bit for bit. Moved pairs take DyPE's angles in float64
where the device has it (image positions sit at 65536 + row: float32 angles there are ~4e-3 rad coarse), cast to
the stock dtype. The tables carry a batch dimension: one plan per sample. The scale comes from the generated
image's tokens only (the forward argument `role_argument` equal to `image_role`), so caption and padding tokens
never set it. At install the module is called on a few positions and must return this layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import build_plan, freq_dtype, plain_plan
from dype_rope.timestep import diffusion_times

from ..parallel import swap_module

SPATIAL = (1, 2)  # the axes (h, w) of the ids, also each one's offset in the interleaving


def axis_pairs(head_dim: int, sections) -> dict[int, list[int]]:
    """The pairs each axis reads: {0: t, 1: h, 2: w}."""
    half = head_dim // 2
    pairs = {a: list(range(a, 3 * int(sections[a]), 3)) for a in SPATIAL}
    taken = set(pairs[1]) | set(pairs[2])
    pairs[0] = [j for j in range(half) if j not in taken]
    return pairs


def standard_form(base: float, head_dim: int, n: int, offset: int) -> tuple[float, float]:
    """(theta_a, c_a) of an axis of n pairs at `offset`: its pairs turn at c_a * theta_a^(-2m / 2n)."""
    return base ** (6.0 * n / head_dim), base ** (-2.0 * offset / head_dim)


@dataclass(frozen=True)
class InterleavedSections:
    """An interleaved multimodal RoPE module at `Family.module`.

    theta:          the base of the module's frequencies, read from the model (the module keeps only inv_freq).
    role_argument:  the model's forward argument giving each token's role ([B, L]).
    image_role:     its value on the generated image's tokens.
    """

    theta: Callable[[nn.Module], float]
    role_argument: str = "indicator"
    image_role: int = 2

    def describe(self) -> str:
        return "ids, interleaved (t, h, w) sections, (cos, sin) halves"

    def install(self, adapter) -> None:
        model, family = adapter.model, adapter.family
        original = getattr(model, family.module, None)
        owner = f"{type(model).__name__}.{family.module}"
        if original is None or isinstance(original, DyPEInterleavedRope):
            raise RuntimeError(f"{owner} is missing or already a DyPE embedding (a copy of a patched model?)")
        head_dim, sections = layout_of(original, owner)
        base = float(self.theta(model))
        probe(original, owner, head_dim, sections, base)
        pairs = axis_pairs(head_dim, sections)
        base_lens = adapter.axis_base_lens(3)
        time, role, image_role = family.time, self.role_argument, self.image_role
        forms = {a: standard_form(base, head_dim, len(pairs[a]), a) for a in SPATIAL}

        def rescaled(position_ids: Tensor, stock: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            step = adapter.step
            if step.timestep is None:
                raise adapter.outside_forward()
            device = position_ids.device
            dtype = freq_dtype(device)
            pos = position_ids.to(dtype)  # whole numbers below 2^24: exact in either dtype
            batch, length = pos.shape[:2]
            roles = step.ids
            image = (roles == image_role) if roles is not None else torch.ones_like(pos[..., 0], dtype=torch.bool)
            # Spans of the generated image's tokens, on the device (no host sync); none gives 0: plain RoPE.
            anywhere = image.any()
            spans = [torch.ones((), dtype=dtype, device=device)]
            for a in SPATIAL:
                hi = torch.where(image, pos[..., a], -torch.inf).amax()
                lo = torch.where(image, pos[..., a], torch.inf).amin()
                spans.append(torch.where(anywhere, hi - lo + 1, torch.zeros((), dtype=dtype, device=device)))
            scales = adapter.axis_scales(torch.stack(spans))
            timestep = step.timestep
            if isinstance(timestep, Tensor) and timestep.dim() == 2:
                # Per-token times [B, L]: the generated image's noisiest token (time runs 0 = noise); other tokens
                # count as clean, so they never set it.
                timestep = timestep.masked_fill(~image, 1.0).amin(dim=-1)
            t = diffusion_times(timestep, divide_by=time.divide_by, reverse=time.reverse, dtype=dtype, device=device)
            step.t, step.scales = t, scales
            t_b = t.reshape(-1)  # [B] or [1]: one plan per sample
            half = head_dim // 2
            new_cos = torch.zeros(batch, length, half, dtype=dtype, device=device)
            new_sin = torch.zeros_like(new_cos)
            moved = torch.zeros(t_b.shape[0], half, dtype=torch.bool, device=device)
            for a in SPATIAL:
                n, (theta_a, c_a) = len(pairs[a]), forms[a]
                index = torch.arange(a, 3 * n, 3, device=device)
                plan = build_plan((2 * n,), theta_a, scales[a : a + 1], t_b, adapter.cfg, (base_lens[a] * c_a,))
                plain = plain_plan((2 * n,), theta_a, device, dtype)
                hit = (plan.inv_freq != plain.inv_freq) | (plan.mscale != 1)  # [B or 1, n]
                angle = pos[..., a].unsqueeze(-1) * (plan.inv_freq * c_a).unsqueeze(1)  # [B, L, n]
                ms = plan.mscale.unsqueeze(1)
                new_cos = new_cos.index_copy(-1, index, (angle.cos() * ms).expand(batch, length, n))
                new_sin = new_sin.index_copy(-1, index, (angle.sin() * ms).expand(batch, length, n))
                moved = moved.index_copy(-1, index, hit.expand(t_b.shape[0], n))
            mask = torch.cat([moved, moved], dim=-1).unsqueeze(1)  # [B or 1, 1, D]
            cos, sin = stock
            return (
                torch.where(mask, torch.cat([new_cos, new_cos], dim=-1).to(cos.dtype), cos),
                torch.where(mask, torch.cat([new_sin, new_sin], dim=-1).to(sin.dtype), sin),
            )

        swap_module(adapter, family.module, DyPEInterleavedRope(original, rescaled))
        adapter.hook_calls(adapter.capture(time.argument, role))


def layout_of(module: Any, owner: str) -> tuple[int, tuple[int, int, int]]:
    """(head_dim, sections) of the module, with a clear error where it lacks them or they do not fit the head."""
    try:
        head_dim, sections = int(module.head_dim), tuple(int(s) for s in module.mrope_section)
    except (AttributeError, TypeError, ValueError) as err:
        raise TypeError(f"{owner} is not an interleaved multimodal RoPE module ({err})") from None
    if len(sections) != 3 or head_dim % 2 or head_dim <= 0:
        raise TypeError(f"{owner}: expected 3 sections (t, h, w) and an even head_dim, got {sections}, {head_dim}")
    if min(sections[1:]) < 1 or any(3 * sections[a] - 3 + a >= head_dim // 2 for a in SPATIAL):
        raise TypeError(
            f"{owner}: sections {sections} do not fit the {head_dim // 2} pairs of the head interleaved by 3"
        )
    return head_dim, sections


def probe(module: nn.Module, owner: str, head_dim: int, sections, base: float) -> None:
    """The stock module on a few distinct positions must give rotate_half (cos, sin) [B, L, D] of this layout."""
    device = next(iter(module.buffers()), torch.zeros(())).device
    ids = torch.stack([torch.arange(4, device=device) * (a + 2) + 1 + a for a in range(3)], dim=-1)
    ids = torch.stack([ids, ids.flip(0)])  # [2, 4, 3]
    try:
        with torch.no_grad():
            out = module(ids)
    except Exception as err:
        raise TypeError(f"{owner} cannot be called with position ids [B, L, 3]: {err}") from err
    half = head_dim // 2
    axis = torch.zeros(half, dtype=torch.long, device=device)
    for a, js in axis_pairs(head_dim, sections).items():
        axis[js] = a
    omega = base ** (-2.0 * torch.arange(half, dtype=torch.float64, device=device) / head_dim)
    angle = ids.double().index_select(-1, axis) * omega  # [2, 4, D/2]
    want = [torch.cat([x, x], dim=-1) for x in (angle.cos(), angle.sin())]
    shapes_ok = isinstance(out, tuple) and len(out) == 2 and all(o.shape == w.shape for o, w in zip(out, want))
    if not shapes_ok or not all(torch.allclose(o.double(), w, rtol=0, atol=1e-5) for o, w in zip(out, want)):
        raise TypeError(
            f"{owner} does not return (cos, sin) [B, L, {head_dim}] of interleaved multimodal RoPE with base "
            f"{base} and sections {tuple(sections)}; this row does not describe the module"
        )


class DyPEInterleavedRope(nn.Module):
    """Drop-in for the stock module: calls it, then gives DyPE's numbers to the pairs DyPE moves."""

    def __init__(self, original: nn.Module, rescaled) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a submodule: the module tree stays as it was
        for name in ("head_dim", "mrope_section"):
            setattr(self, name, getattr(original, name))
        self._rescaled = rescaled

    def forward(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        return self._rescaled(position_ids, self.original(position_ids))
