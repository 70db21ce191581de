"""Checks the adapter tests of FLUX.2, Qwen-Image, Lumina2, Z-Image and EmbedND share: the float64 reference
of a DyPE table, the sampler's own timesteps, and the round-trip invariants."""

from __future__ import annotations

import numpy as np
import torch

from dype_rope import DyPEConfig, build_plan
from dype_rope.adapters.base import Adapter

STEPS = 28
# Class attributes through which diffusers finds submodules by name.
DIFFUSERS_NAMES = ("_skip_layerwise_casting_patterns", "_keep_in_fp32_modules", "_cp_plan")


def reference_angles(positions, axes_dims, theta, scales, t, base_lens, cfg=DyPEConfig()):
    """float64 angles [L, D/2] and mscale [D/2] of DyPE at diffusion time t for the given per-axis scales."""
    scales = torch.as_tensor(scales, dtype=torch.float64)
    plan = build_plan(axes_dims, theta, scales, torch.tensor(float(t), dtype=torch.float64), cfg, base_lens)
    pos = torch.as_tensor(positions, dtype=torch.float64)
    return pos[:, plan.pair_axis] * plan.inv_freq, plan.mscale


def reference_complex(positions, axes_dims, theta, scales, t, base_lens, cfg=DyPEConfig()):
    angles, mscale = reference_angles(positions, axes_dims, theta, scales, t, base_lens, cfg)
    return torch.polar(mscale.expand_as(angles), angles)


def sampler_timesteps(
    config: dict, image_seq_len: int, steps: int = STEPS, mu: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, sigmas) of the family's FlowMatchEulerDiscreteScheduler, set up as its pipeline does
    (sigmas 1 .. 1/steps, resolution shift mu from the pipeline's calculate_shift unless given)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    c = scheduler.config
    if mu is None:
        mu = calculate_shift(image_seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return scheduler.timesteps, scheduler.sigmas[:-1]


class TimeRecorder:
    """Records the diffusion time the patched encoding computed, from a hook on a module that runs after it."""

    def __init__(self, adapter: Adapter, module: torch.nn.Module) -> None:
        self.seen: list[float] = []
        self._handle = module.register_forward_pre_hook(lambda m, a: self.seen.append(float(adapter.step.t)))

    def close(self) -> None:
        self._handle.remove()


def check_t_follows_sampler(seen: list[float], sigmas: torch.Tensor) -> None:
    t = torch.tensor(seen, dtype=torch.float64)
    assert len(seen) == len(sigmas)
    assert t[0] == 1.0, "the first step must be pure noise"
    # Shifted flow-matching schedules stop short of 0 (the last Euler step jumps to data): FLUX.2 at
    # 1024 px ends near 0.24, Lumina2 (shift 6) near 0.18, Z-Image (shift 3) near 0.1, Qwen-Image at 0.02.
    assert 0.0 < t[-1] < 0.3, f"the last step must be near data, got {t[-1]}"
    assert (t[1:] < t[:-1]).all(), "t must fall over the sampling steps"
    torch.testing.assert_close(t, sigmas.double(), rtol=0, atol=1e-6)


def hooks_of(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
        for m in model.modules()
    )


def state_of(model: torch.nn.Module) -> dict:
    """What remove() must give back unchanged: module names, parameters, attributes diffusers reads."""
    return dict(
        names=[n for n, _ in model.named_modules()],
        params={k: v.clone() for k, v in model.state_dict().items()},
        attrs=sorted(vars(model)),
        hooks=hooks_of(model),
        meta={k: getattr(type(model), k, None) for k in DIFFUSERS_NAMES},
    )


def assert_same_state(before: dict, after: dict) -> None:
    assert before["names"] == after["names"]
    assert before["attrs"] == after["attrs"]
    assert before["hooks"] == after["hooks"]
    assert before["meta"] == after["meta"]
    assert before["params"].keys() == after["params"].keys()
    for k, v in before["params"].items():
        assert torch.equal(v, after["params"][k]), k
