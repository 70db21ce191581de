"""Ernie-Image (adapters/families/by_angles.py): ErnieImageEmbedND3 returns angles [B, L, 1, D], pair j on channels
2j and 2j + 1; cos and sin are formed in the attention, where DyPE applies YaRN's attention factor
(tests/test_family_ernie.py checks that part against an attention written from the reference tables).

The contract reads the encoding's angles as unit (cos, sin) pairs and compares them with the reference pairs of
tests/reference_dype.py divided by their own magnitude (the reference mscale), so every method and aspect checks
the frequencies on Ernie's own positions: image tokens (caption length, row, column), caption tokens (index, 0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .row import Family, RopeLayout, Sampler
from .tiny import grid_ids, tiny

TEXT = 5  # caption tokens of every sample
TINY_ERNIE = dict(
    hidden_size=32, num_attention_heads=2, num_layers=1, ffn_hidden_size=48, in_channels=4, out_channels=4,
    patch_size=1, text_in_dim=8, rope_theta=256, rope_axes_dim=(4, 6, 6),
)


def build_ernie(seed: int = 0, **overrides):
    """The tiny model, with the modulation and the output layer (zero at init, which would make every output 0
    and every output comparison empty) given random weights."""
    model = tiny("ErnieImageTransformer2DModel", TINY_ERNIE, seed, **overrides)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in (model.adaLN_modulation[-1], model.final_linear):
            layer.weight.copy_(0.2 * torch.randn(layer.weight.shape, generator=g))
            layer.bias.copy_(0.2 * torch.randn(layer.bias.shape, generator=g))
    return model


def ernie_inputs(grid, batch, cond, seed):
    assert cond is None, "Ernie-Image takes no conditioning image"
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 4, grid[0], grid[1], generator=g),
        text_bth=torch.randn(batch, TEXT, 8, generator=g),
        text_lens=torch.full((batch,), TEXT, dtype=torch.long),
    )


def ernie_positions(grid, cond, calls):
    """One call: the image's tokens (caption length, row, column), then the caption's (index, 0, 0)."""
    text = torch.stack([torch.arange(TEXT), torch.zeros(TEXT), torch.zeros(TEXT)], -1)
    return [torch.cat([grid_ids(*grid, TEXT).double(), text.double()])]


def unit_pairs(angles: torch.Tensor) -> list[torch.Tensor]:
    """angles [B, L, 1, D] with both channels of a pair equal -> (cos, sin) [B * L, D/2, 2] in float64."""
    a = angles.reshape(-1, angles.shape[-1])
    assert torch.equal(a[:, 0::2], a[:, 1::2])
    a = a[:, 0::2].double()
    return [torch.stack([a.cos(), a.sin()], -1)]


@dataclass(frozen=True)
class AnglesLayout(RopeLayout):
    """Angles carry no magnitude: the reference pairs (m cos, m sin) are compared by direction."""

    def expected(self, calls, grid, base, t, aspect, cond, **schedule):
        pairs = super().expected(calls, grid, base, t, aspect, cond, **schedule)
        return [p / p.norm(dim=-1, keepdim=True) for p in pairs]


def _ernie_steps(steps: int = 20, shift: float = 3.0):
    """ErnieImagePipeline's schedule: sigmas 1 .. 1/steps set on FlowMatchEulerDiscreteScheduler (its fixed shift
    applied, no mu), the model called with the scheduler's timestep."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=torch.linspace(1.0, 0.0, steps + 1)[:-1].numpy())
    return scheduler.timesteps, scheduler.sigmas[:-1]


ERNIE_IMAGE = Family(
    name="ernie-image",
    adapter="ernie-image",
    build=build_ernie,
    make_inputs=ernie_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts,  # ErnieImagePipeline passes the scheduler's timestep as it is (1000 = noise)
    encoding="pos_embed",
    layout=AnglesLayout(
        axes=(4, 6, 6), theta=256.0, tables=unit_pairs, positions=ernie_positions, dtype=torch.float32,
        tol=1e-6,  # float32 angles (the stock precision) up to ~10 rad: half an ulp is 4.8e-7
    ),
    base=(4, 5),
    below=(((4, 5), (4, 5)), ((3, 5), (4, 5)), ((4, 2), (4, 5))),
    above=(8, 7),
    default_base=(64, 64),
    samplers=(Sampler("flow-match-shift-1", lambda: _ernie_steps(shift=1.0)), Sampler("flow-match-shift-3", _ernie_steps)),
    direct_call=lambda: (grid_ids(4, 4, TEXT).float()[None],),
)

ROWS = (ERNIE_IMAGE,)
