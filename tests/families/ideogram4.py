"""Ideogram 4 (adapters/mechanisms/mrope.py, InterleavedMRope): interleaved (t, h, w) multimodal RoPE.

The reference of every pair DyPE moves is tests/reference_dype.py on Ideogram 4's layout written from its formula:
pair j turns at base^(-2j/D); the rows' pairs j = 3m + 1 (m < n_h) and the columns' j = 3m + 2 (m < n_w) turn at
c_a theta_a^(-2m / 2n_a), theta_a = base^(6 n_a / D), c_a = base^(-2a / D): standard RoPE on 2 n_a channels over
positions c_a p, YaRN's base length the base grid times c_a. The pairs the reference leaves plain (frequency and
mscale both plain: the text axis always, NTK's fastest pair) must be the upstream module's own numbers, bit for bit:
its float32 angles at image positions 65536 + row are ~4e-3 rad from float64, so no float64 formula can stand in.
Positions, segments and roles come from Ideogram4Pipeline._prepare_ids itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reference_dype import axis_ratios, frequencies

from .row import Family, Sampler
from .tiny import tiny

# Ideogram 4's structure, tiny: head_dim 24 (12 pairs), sections (6, 3, 3): rows on pairs 1, 4, 7, columns on
# 2, 5, 8, the text axis on 0, 3, 6, 9, 10, 11. rope_theta is the released default, 5e6.
TINY_IDEOGRAM4 = dict(
    in_channels=4,
    num_layers=1,
    attention_head_dim=24,
    num_attention_heads=2,
    intermediate_size=32,
    adaln_dim=16,
    llm_features_dim=8,
    mrope_section=(6, 3, 3),
)
THETA = 5_000_000.0
TEXT = (3, 2)  # caption lengths of the batch's prompts (left-padded to MAX_TEXT by the pipeline)
MAX_TEXT = 4


def tiny_ideogram4(seed: int = 0, **overrides):
    return tiny("Ideogram4Transformer2DModel", TINY_IDEOGRAM4, seed, **overrides)


def ideogram4_inputs(grid, batch=1, cond=None, seed=1):
    """The conditional pass of Ideogram4Pipeline: [left padding][caption][image] packed, its ids from the
    pipeline's own _prepare_ids."""
    from diffusers.pipelines.ideogram4.pipeline_ideogram4 import Ideogram4Pipeline

    g = torch.Generator().manual_seed(seed)
    rows, cols = grid
    lengths = [TEXT[b % len(TEXT)] for b in range(batch)]
    position_ids, segment_ids, indicator = Ideogram4Pipeline._prepare_ids(lengths, rows, cols, MAX_TEXT, "cpu")
    length = position_ids.shape[1]
    c = TINY_IDEOGRAM4
    return dict(
        hidden_states=torch.randn(batch, length, c["in_channels"], generator=g),
        encoder_hidden_states=torch.randn(batch, length, c["llm_features_dim"], generator=g),
        position_ids=position_ids,
        segment_ids=segment_ids,
        indicator=indicator,
        return_dict=False,
    )


def pipeline_time(timesteps):
    """Ideogram4Pipeline: t_model = 1 - timestep / num_train_timesteps (0 = noise, 1 = clean data)."""
    return 1.0 - timesteps.float() / 1000


def _ideogram4_steps(steps: int = 30, height: int = 1024, width: int = 1024):
    """Ideogram4Pipeline's schedule: its logit-normal sigmas at its resolution-aware mean (base mu 0, std 1), set
    on a FlowMatchEulerDiscreteScheduler as explicit sigmas."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ideogram4.pipeline_ideogram4 import _logit_normal_sigmas, _resolution_aware_mu

    sigmas = _logit_normal_sigmas(steps, _resolution_aware_mu(height, width, 0.0), std=1.0)
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(sigmas=sigmas.tolist())
    return scheduler.timesteps, scheduler.sigmas[:-1]


def halves(cos, sin):
    """(cos, sin) [B, L, D], pair j at channels j and j + D/2 -> [B * L, D/2, 2]."""
    d = cos.shape[-1] // 2
    cos, sin = cos.reshape(-1, 2 * d), sin.reshape(-1, 2 * d)
    assert torch.equal(cos[:, :d], cos[:, d:]) and torch.equal(sin[:, :d], sin[:, d:])
    return torch.stack([cos[:, :d], sin[:, :d]], -1).double()


def stock_tables(position_ids):
    from diffusers.models.transformers.transformer_ideogram4 import Ideogram4MRoPE

    c = TINY_IDEOGRAM4
    with torch.no_grad():
        return Ideogram4MRoPE(c["attention_head_dim"], THETA, c["mrope_section"])(position_ids)


@dataclass(frozen=True)
class Ideogram4Layout:
    head_dim: int
    sections: tuple[int, int, int]
    tol: float = 2e-7  # float32 rounding of DyPE's float64 cos and sin
    dtype: torch.dtype = torch.float32

    def seen(self, calls):
        return [halves(*out) for _, out in calls]

    def expected(self, calls, grid, base, t, aspect, cond, **schedule):
        d = self.head_dim
        # t as the model receives it: the scheduler's float32 timestep sigma * 1000, turned by the pipeline into
        # 1 - timestep / 1000 in float32. Its rounding (~6e-8) turns pairs at 65536 + row (~6e4 rad) by ~1e-3
        # under a schedule in t, so the reference takes the same t; the tests' times are exact either way.
        timestep = torch.tensor(t, dtype=torch.float32) * 1000
        t = 1.0 - float(pipeline_time(timestep).double())
        scales = axis_ratios([1.0, *grid[-2:]], [1.0, *base], (1, 2), aspect, spatial=(1, 2))
        out = []
        for (position_ids,), _ in calls:
            want = halves(*stock_tables(position_ids)).clone()  # [B * L, D/2, 2]
            pos = position_ids.reshape(-1, 3).double()
            for a in (1, 2):
                n = self.sections[a]
                theta_a, c_a = THETA ** (6 * n / d), THETA ** (-2 * a / d)
                omega, m = frequencies(2 * n, theta_a, base[a - 1] * c_a, scales[a], t, **schedule)
                plain, _ = frequencies(2 * n, theta_a, base[a - 1] * c_a, 1.0, t, **schedule)
                for k in range(n):
                    if omega[k] == plain[k] and m == 1.0:
                        continue  # plain: the stock number stays
                    angle = pos[:, a] * (float(omega[k]) * c_a)
                    want[:, 3 * k + a, 0], want[:, 3 * k + a, 1] = angle.cos() * m, angle.sin() * m
            out.append(want)
        return out


IDEOGRAM4 = Family(
    name="ideogram4",
    adapter="ideogram4",
    build=tiny_ideogram4,
    make_inputs=ideogram4_inputs,
    time_arg="timestep",
    pipeline_time=pipeline_time,
    encoding="rotary_emb",
    layout=Ideogram4Layout(TINY_IDEOGRAM4["attention_head_dim"], TINY_IDEOGRAM4["mrope_section"]),
    base=(3, 4),
    below=(((3, 4), (3, 4)), ((2, 3), (3, 4)), ((5, 5), (5, 5))),
    above=(5, 7),
    default_base=(128, 128),
    samplers=(Sampler("ideogram4-logit-normal", _ideogram4_steps),),
    direct_call=lambda: (torch.zeros(1, 4, 3, dtype=torch.long),),
    output=lambda out: out[0],
)

ROWS: tuple = (IDEOGRAM4,)
