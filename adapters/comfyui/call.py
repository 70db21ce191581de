"""What one call of a ComfyUI diffusion model tells DyPE: the diffusion time and the generated image's extent.

ComfyUI embeds position ids in several calls of the same module (caption ids, image ids, reference images),
and a reference image's ids can sit anywhere (Kontext's "uxo" puts it beside the image on frame 0). The ids
therefore cannot tell how large the generated image is. The latent can: whoever starts the call (the DyPE
node's apply_model wrapper, or the forward pre-hook of `dype_rope.patch`) reads the image's token grid off the
latent's shape, a host value, and the sigma tensor as it is, without touching its value. Everything else is
computed on the device inside the call, once, and shared by every embedding call of that model call.

The state is thread-local, so two threads sampling one patched model never see each other's call; it is
owned by one patch, so two patches never share it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from dype_rope.rope import RopePlan
from dype_rope.timestep import MIXED_TIMES, host_readable


@dataclass
class ComfyCall:
    """One model call: sigma (the flow-matching time, 1 = noise) and the image's size ratio on every id axis."""

    sigma: Tensor
    scales: tuple[float, ...]  # size ratio of every id axis (1.0 where never rescaled), host numbers
    axes: tuple[int, ...]  # the id axes rescaled in this call (ratio > 1): known on the host, from shapes only
    plans: dict = field(default_factory=dict)  # device -> RopePlan, built once per call


class CallState(threading.local):
    """The call in flight on this thread (None between calls)."""

    def __init__(self) -> None:
        self.call: ComfyCall | None = None

    def run(self, call: ComfyCall, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs) with `call` in flight; the previous one (a nested call) is restored after it."""
        previous, self.call = self.call, call
        try:
            return fn(*args, **kwargs)
        finally:
            self.call = previous


def call_in_flight(state: CallState, what: str) -> ComfyCall:
    """The call `state` has in flight, or the error of an embedder called outside one (`what` names it)."""
    call = state.call
    if call is None:
        raise RuntimeError(
            f"the DyPE position embedding of {what} was called outside a model call; sample the model through "
            "ComfyUI (or call the patched diffusion model itself)"
        )
    return call


def plan_of(call: ComfyCall, device: torch.device, build: Callable[[ComfyCall, torch.device], RopePlan]) -> RopePlan:
    """The call's plan on `device`, built on first use."""
    plan = call.plans.get(device)
    if plan is None:
        plan = call.plans[device] = build(call, device)
    return plan


def one_plan_for_the_call(call: ComfyCall, plan: RopePlan) -> RopePlan:
    """The first sample's plan, for tables without a batch axis. ComfyUI's samplers give every sample of a model
    call one sigma; a direct call whose samples sit at different sigmas cannot be served by one table, so it is
    refused where the sigmas are free to read (MIXED_TIMES), and otherwise (on a GPU, under compile) the rescaled
    pairs become NaN, decided on the device with no host sync, rather than silently taking the first sample's."""
    sigma = call.sigma.reshape(-1)
    if sigma.numel() == 1:
        return RopePlan(plan.inv_freq[:1], plan.mscale[:1], plan.pair_axis)
    if host_readable(sigma) and bool((sigma != sigma[0]).any()):
        raise ValueError(MIXED_TIMES)
    mixed = (sigma != sigma[:1]).any().to(plan.inv_freq.device)
    inv_freq, mscale = plan.inv_freq[:1], plan.mscale[:1]
    return RopePlan(
        torch.where(mixed, torch.full_like(inv_freq, math.nan), inv_freq),
        torch.where(mixed, torch.full_like(mscale, math.nan), mscale),
        plan.pair_axis,
    )
