"""The angles mechanism: a RoPE module that maps position ids [B, L, n_axes] to rotation *angles* [B, L, 1, D]
(pair j's angle on channels 2j and 2j + 1) and leaves cos and sin to the attention (Ernie-Image's
ErnieImageEmbedND3).

Frequencies: the module is replaced by one that calls it and keeps its angle on every pair whose axis is not
stretched in this call (torch.where on the device, no host sync); stretched pairs take DyPE's angles, computed in
float64 where the device has it and cast to the stock dtype. At or below the base grid the angles are the stock
ones bit for bit.

The attention factor: YaRN multiplies a pair's cos and sin by mscale, and an angle has no magnitude to carry it.
Its faithful place is where the model forms cos and sin, so each attention's processor is swapped (instance-level,
undone by remove()) for the row's processor, which forms them as the stock one does and multiplies them by the
call's per-pair mscale (`element_mscale`: 1 on every pair not stretched) before the rotation. An exact
reformulation on q and k around the stock processor does not exist here: the stock rotation couples channel k with
channel k + D/2, which read pairs of different axes (k // 2 and D/4 + k // 2), so one channel's mscale cannot be
moved in front of the rotation. At install the row's processor is run against the stock one on the model's own
first attention with plain angles and must give the same numbers bit for bit, or the patch is refused.

The scale comes from the latent's grid (host integers from its shape), so caption tokens, whose ids share axis 0
with the image's caption-length index, never set it. The angles carry the batch, so a batch mixing diffusion times
gets one plan per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims, freq_dtype, plain_plan
from dype_rope.rope_formats import rope_angles
from dype_rope.timestep import diffusion_times

from ..base import argument_reader, spans_on
from ..parallel import carry_parallel_hooks

# install_attention(adapter, mscale_of_call) -> None: swap the model's attention processors for ones that apply
# the call's per-channel mscale (mscale_of_call() -> Tensor broadcasting over [B, L, heads, D]); registers undo.
AttentionInstaller = Callable[[object, Callable[[], Tensor]], None]


def doubled(x: Tensor) -> Tensor:
    """Per-pair values [..., D/2] -> per-channel [..., D], pair j on channels 2j and 2j + 1 (the module's layout)."""
    return x.repeat_interleave(2, dim=-1)


def dype_angles(ids: Tensor, plan: RopePlan) -> Tensor:
    """Angles [B, L, 1, D] of `plan` at `ids` [B, L, n], in the plan's dtype."""
    return doubled(rope_angles(ids, plan)).unsqueeze(-2)


def element_mscale(plan: RopePlan, stretched: Tensor) -> Tensor:
    """The per-channel attention factor: the plan's mscale on stretched pairs, exactly 1 elsewhere; [D] for one
    plan, [B, 1, 1, D] for one plan per sample (broadcasting over [B, L, heads, D])."""
    m = torch.where(stretched, plan.mscale, torch.ones_like(plan.mscale))
    m = doubled(m)
    return m if m.dim() == 1 else m[:, None, None, :]


@dataclass(frozen=True)
class Angles:
    """The layout of an angles-returning RoPE module, declared by a family row (adapters/table.py).

    latent:       the forward argument holding the latent [B, C, H, W]; the token grid is (H // patch, W // patch).
    patch_attr:   the model's attribute holding its patch size (the model floors, so this does too).
    attention:    installs the processors that apply the attention factor where cos and sin are formed.
    """

    attention: AttentionInstaller
    latent: str = "hidden_states"
    patch_attr: str = "patch_size"

    def install(self, adapter) -> None:
        install_angles(self, adapter)

    def describe(self) -> str:
        return "ids -> angles, mscale in the attention processor"


def probe(module: nn.Module, axes_dims, theta: float, device: torch.device) -> None:
    """Call the stock module on a few positions on the model's device: it must return the angles of plain RoPE
    in this layout."""
    name = type(module).__name__
    n = len(axes_dims)
    # distinct, non-trivial positions on every axis: a wrong theta, axis order or pair layout shows
    ids = torch.stack([torch.arange(4, dtype=torch.float32, device=device) * (a + 2) + 1 for a in range(n)], -1)
    ids = torch.stack([ids, ids.flip(0)])
    try:
        with torch.no_grad():
            out = module(ids)
    except Exception as err:
        raise TypeError(f"{name} cannot be called with position ids {tuple(ids.shape)}: {err}") from err
    want = dype_angles(ids, plain_plan(axes_dims, theta, device=device))
    where = f"{name} (theta={theta}, axes_dim={list(axes_dims)}, angles [B, L, 1, D], pairs on channels 2j, 2j + 1)"
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(want.shape):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"{where}: the module returns {shape}, the layout gives {tuple(want.shape)}")
    # compared as rotations: the angles reach up to 19 rad, where float32 rounds to ~1e-6
    error = torch.stack([(out.double().cos() - want.cos()).abs().amax(), (out.double().sin() - want.sin()).abs().amax()])
    if not error.amax() <= 1e-5:
        raise TypeError(f"{where}: the module's angles differ from plain RoPE by {float(error.amax()):.3g}")


class DyPEAnglesEncoding(nn.Module):
    """Drop-in for an angles-returning RoPE module: forward(ids) -> the stock angles, DyPE's on every pair whose
    axis is stretched in this call."""

    def __init__(self, original: nn.Module, plan_of_call) -> None:
        super().__init__()
        for attr in ("dim", "theta", "axes_dim"):
            if hasattr(original, attr):
                setattr(self, attr, getattr(original, attr))
        # a plain attribute, not a submodule: the module tree (state_dict, LoRA keys) stays as it was
        object.__setattr__(self, "original", original)
        self._plan_of_call = plan_of_call

    def forward(self, ids: Tensor) -> Tensor:
        stock = self.original(ids)
        plan, stretched = self._plan_of_call(ids)
        return torch.where(doubled(stretched), dype_angles(ids, plan).to(stock.dtype), stock)

    def extra_repr(self) -> str:
        return f"theta={getattr(self, 'theta', None)}, axes_dim={list(getattr(self, 'axes_dim', []))}"


def install_angles(spec: Angles, adapter) -> None:
    family, model = adapter.family, adapter.model
    owner = f"{type(model).__name__}.{family.module}"
    original = getattr(model, family.module, None)
    if isinstance(original, DyPEAnglesEncoding):
        raise RuntimeError(f"{owner} is already a DyPE embedding (a copy of a patched model?)")
    if not (isinstance(original, nn.Module) and hasattr(original, "theta") and hasattr(original, "axes_dim")):
        raise TypeError(f"{owner} ({type(original).__name__}) has no `theta` and `axes_dim`: not an ids-style module")
    axes_dims = check_axes_dims(original.axes_dim)
    if max(family.rescaled_axes) >= len(axes_dims):
        raise ValueError(f"{owner} has {len(axes_dims)} RoPE axes; the row rescales axes {family.rescaled_axes}")
    theta = float(original.theta)
    weight = next(model.parameters(), None)  # the module itself has none: the ids' device is the model's
    probe(original, axes_dims, theta, weight.device if weight is not None else torch.device("cpu"))
    patch = int(getattr(model, spec.patch_attr))
    base_lens = adapter.axis_base_lens(len(axes_dims))
    time = family.time
    rows, cols = family.rescaled_axes
    read_t = argument_reader(model.forward, time.argument)
    read_latent = argument_reader(model.forward, spec.latent)

    def begin(args: tuple, kwargs: dict) -> None:
        step = adapter.step
        step.clear()
        step.timestep = read_t(args, kwargs)
        latent = read_latent(args, kwargs)
        grid = [1] * len(axes_dims)  # host integers from the shape, floored as the model's patch embedding does
        grid[rows], grid[cols] = latent.shape[-2] // patch, latent.shape[-1] // patch
        step.grid = tuple(grid)

    def plan_of_call(ids: Tensor) -> tuple[RopePlan, Tensor]:
        step = adapter.step  # the calling thread's
        if step.timestep is None or step.grid is None:
            raise adapter.outside_forward()
        if step.plan is None:  # one plan per model call
            spans = spans_on(step.grid, freq_dtype(ids.device), ids.device)
            t = diffusion_times(step.timestep, divide_by=time.divide_by, reverse=time.reverse, dtype=spans.dtype,
                                device=spans.device)
            adapter.plan_step(t, spans, axes_dims, theta, base_lens)
        return step.plan, step.scales.index_select(-1, step.plan.pair_axis) > 1

    def mscale_of_call() -> Tensor:
        step = adapter.step
        if step.plan is None:  # the encoding runs first in every call
            raise adapter.outside_forward()
        return element_mscale(step.plan, step.scales.index_select(-1, step.plan.pair_axis) > 1)

    adapter.hook_calls(begin)
    if adapter.cfg.method == "none":  # plain RoPE is the stock model itself
        return
    replacement = DyPEAnglesEncoding(original, plan_of_call)
    carry_parallel_hooks(original, replacement)
    spec.attention(adapter, mscale_of_call)  # refuses before the encoding is touched
    setattr(model, family.module, replacement)
    adapter.on_remove(lambda: setattr(model, family.module, original))
    adapter.on_remove(lambda: carry_parallel_hooks(replacement, original))


__all__ = ["Angles", "DyPEAnglesEncoding", "dype_angles", "element_mscale"]
