"""dype_rope.patch() on SD3's absolute sin-cos embedding: identity, the embedding against a float64 reference of
the schedules on SD3's stored-grid layout, t from SD3's own scheduler, compile, round trip, past the stored grid."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch._dynamo.testing

import dype_rope
from dype_rope import DyPEConfig
from reference_dype import frequencies, plain
from tiny_sd3 import TINY_SD3, sd3_inputs, tiny_sd3

BASE = TINY_SD3["sample_size"] // TINY_SD3["patch_size"]  # 8 tokens
MAX = TINY_SD3["pos_embed_max_size"]  # 12 tokens
CHANNELS = TINY_SD3["attention_head_dim"] * TINY_SD3["num_attention_heads"] // 2  # per axis


@pytest.fixture(scope="module")
def model():
    return tiny_sd3()


@pytest.fixture(scope="module")
def embedding_model():
    """A model whose patch projection is zero, so PatchEmbed's output is the position embedding itself."""
    m = tiny_sd3()
    with torch.no_grad():
        m.pos_embed.proj.weight.zero_()
        m.pos_embed.proj.bias.zero_()
    return m


def run(m, **inputs):
    with torch.no_grad():
        return m(**inputs).sample


def embedding_seen(m, inputs) -> torch.Tensor:
    seen = []
    hook = m.pos_embed.register_forward_hook(lambda mod, args, out: seen.append(out[0]))
    try:
        run(m, **inputs)
    finally:
        hook.remove()
    return seen[0]


def reference_embedding(h, w, t, cfg, base_grid=(BASE, BASE), aspect="per-axis", base_size=BASE, max_size=MAX):
    """SD3's layout written out: row k of the stored grid sits at k * base_size / max_size, an n-token image takes
    rows (max_size - n) // 2 ..., rescaled frequencies act on the offset from the stored grid's centre, column
    channels come first, each half is [sin, cos]."""
    spacing = base_size / max_size
    centre = (max_size - 1) / 2 * spacing
    ratios = [h / base_grid[0], w / base_grid[1]]
    if aspect == "isotropic":
        ratios = [max(ratios)] * 2
    base = plain(CHANNELS, 10000.0)
    halves = []
    for n, ratio, b in zip((h, w), ratios, base_grid):
        pos = ((max_size - n) // 2 + np.arange(n)) * spacing
        if ratio <= 1:
            angles = np.outer(pos, base)
        else:
            omega, _ = frequencies(CHANNELS, 10000.0, b * spacing, ratio, t, cfg)
            angles = centre * base[None] + np.outer(pos - centre, omega)
        halves.append(np.concatenate([np.sin(angles), np.cos(angles)], axis=1))
    rows, cols = halves
    cols, rows = np.broadcast_to(cols[None], (h, w, CHANNELS)), np.broadcast_to(rows[:, None], (h, w, CHANNELS))
    grid = np.concatenate([cols, rows], -1)
    return torch.from_numpy(grid.reshape(h * w, -1).copy())


# -- identity and round trip ----------------------------------------------------------------------------------

@pytest.mark.parametrize("grid", [(8, 8), (5, 7), (2, 8)])
@pytest.mark.parametrize("method", ["yarn", "ntk", "pi"])
@pytest.mark.parametrize("aspect", ["per-axis", "isotropic"])
def test_at_or_below_base_grid_is_bit_exact(model, grid, method, aspect):
    x = sd3_inputs(*grid, timestep=640.0)
    ref = run(model, **x)
    with dype_rope.patch(model, method=method, aspect=aspect):
        assert torch.equal(run(model, **x), ref)


def test_remove_restores_the_model_exactly(model):
    small, big = sd3_inputs(8, 8, timestep=900.0), sd3_inputs(32, 32, timestep=900.0)
    ref = run(model, **small)
    embed = model.pos_embed
    before = dict(vars(embed))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handle = dype_rope.patch(model)
    assert dype_rope.is_patched(model)
    run(model, **big)
    handle.remove()
    assert not dype_rope.is_patched(model) and model.pos_embed is embed
    assert vars(embed).keys() == before.keys() and "cropped_pos_embed" not in vars(embed)
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(run(model, **small), ref)
    with pytest.raises(ValueError, match="pos_embed_max_size"):  # the stock limit is back
        run(model, **big)


# -- the embedding the model sees -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["yarn", "ntk", "pi"])
@pytest.mark.parametrize("t", [1.0, 0.45, 0.0])
@pytest.mark.parametrize("grid, aspect", [((16, 16), "per-axis"), ((10, 24), "per-axis"), ((10, 24), "isotropic")])
def test_embedding_follows_the_schedule_on_sd3s_grid(embedding_model, method, t, grid, aspect):
    x = sd3_inputs(*grid, timestep=1000.0 * t)
    with dype_rope.patch(embedding_model, method=method, aspect=aspect):
        got = embedding_seen(embedding_model, x)
    ref = reference_embedding(*grid, t, DyPEConfig(method=method), aspect=aspect)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5)
    stock = reference_embedding(*grid, t, DyPEConfig(method="none"))
    if t > 0:  # every Dy- schedule is plain at t = 0 (kappa = 0)
        assert (got.double() - stock).abs().max() > 1e-3


def test_inside_the_stored_grid_the_layout_continues_the_stock_crop(embedding_model):
    """Past the base grid but inside the stored one, plain frequencies must give back diffusers' own crop: the
    position spacing and centring are the model's."""
    x = sd3_inputs(10, 12, timestep=300.0)
    stock = embedding_seen(embedding_model, x)
    with dype_rope.patch(embedding_model, method="none"):
        got = embedding_seen(embedding_model, x)
    torch.testing.assert_close(got, stock, rtol=0, atol=1e-6)


def test_a_base_grid_beyond_the_stored_grid_extrapolates_plainly(embedding_model):
    x = sd3_inputs(14, 14, timestep=500.0)
    with dype_rope.patch(embedding_model, base_grid=(16, 16)):
        got = embedding_seen(embedding_model, x)
    ref = reference_embedding(14, 14, 0.5, DyPEConfig(), base_grid=(16, 16))
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5)


def test_default_base_grid_is_sample_size_over_patch_size(model):
    with dype_rope.patch(model) as handle:
        assert handle.base_grid == (BASE, BASE)
    with dype_rope.patch(model, base_resolution=512) as handle:  # 16 px per token
        assert handle.base_grid == (32, 32)


def test_patch_size_2_reads_tokens_from_latent_pixels():
    """SD3's real patch size: PatchEmbed gets latent pixels and crops in tokens."""
    m = tiny_sd3(patch_size=2, sample_size=2 * BASE)
    with torch.no_grad():
        m.pos_embed.proj.weight.zero_()
        m.pos_embed.proj.bias.zero_()
    small = sd3_inputs(2 * BASE, 2 * BASE, timestep=600.0)  # latent pixels: the 8 x 8 token base grid
    ref = run(m, **small)
    with dype_rope.patch(m, method="ntk") as handle:
        assert handle.base_grid == (BASE, BASE)
        assert torch.equal(run(m, **small), ref)
        got = embedding_seen(m, sd3_inputs(2 * 20, 2 * 14, timestep=600.0))
    torch.testing.assert_close(got.double(), reference_embedding(20, 14, 0.6, DyPEConfig(method="ntk")), rtol=0, atol=1e-5)


# -- diffusion time -------------------------------------------------------------------------------------------

def test_t_follows_sd3s_own_scheduler(model):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)  # SD3's scheduler config
    scheduler.set_timesteps(28)
    seen = []
    with dype_rope.patch(model) as handle:
        hook = model.pos_embed.register_forward_hook(lambda *a: seen.append(handle.adapter.step.t.item()))
        try:
            for timestep in scheduler.timesteps:
                run(model, **sd3_inputs(16, 16, timestep=float(timestep)))
        finally:
            hook.remove()
    expected = (scheduler.timesteps.double() / 1000).tolist()
    assert seen == pytest.approx(expected, rel=0, abs=1e-12)
    assert seen[0] == 1.0 and seen[-1] < 0.05
    assert all(a > b for a, b in zip(seen, seen[1:]))


# -- compile and large grids ----------------------------------------------------------------------------------

def test_compiles_into_one_graph_over_28_steps(model):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(28)
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    with dype_rope.patch(model):
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for timestep in scheduler.timesteps:
            x = sd3_inputs(16, 16, timestep=float(timestep))
            with torch.no_grad():
                got = compiled(**x).sample
        assert counter.frame_count == 1
        torch.testing.assert_close(got, run(model, **x), rtol=1e-6, atol=1e-6)


def test_forward_at_4x_the_base_grid_passes_the_stored_grid_and_stays_finite(model):
    x = sd3_inputs(4 * BASE, 4 * BASE, timestep=800.0)
    assert 4 * BASE > MAX
    with pytest.raises(ValueError, match="pos_embed_max_size"):
        run(model, **x)
    with dype_rope.patch(model):
        out = run(model, **x)
    assert out.shape == (1, TINY_SD3["out_channels"], 4 * BASE, 4 * BASE)
    assert torch.isfinite(out).all()


# -- bad input ------------------------------------------------------------------------------------------------

def test_a_patch_embed_without_a_stored_grid_is_refused_and_left_untouched():
    m = tiny_sd3(pos_embed_max_size=None)
    with pytest.raises(TypeError, match="pos_embed_max_size"):
        dype_rope.patch(m)
    assert not dype_rope.is_patched(m) and "cropped_pos_embed" not in vars(m.pos_embed)
    assert not m._forward_pre_hooks and not m._forward_hooks


def test_embedding_refuses_calls_outside_the_model(model):
    with dype_rope.patch(model):
        with pytest.raises(RuntimeError, match="outside the model"):
            model.pos_embed(torch.zeros(1, 4, 16, 16))
