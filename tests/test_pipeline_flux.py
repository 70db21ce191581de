"""dype_rope.enable() on a tiny FluxPipeline: at 4x the base grid the transformer sees the t, kappa and shift
derived here from the scheduler's formula, the policies give the documented mu, and remove() restores all."""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import dype_rope
from tiny_pipeline import prompt_embeddings, tiny_flux_pipeline

BASE = 4  # tokens per side; the 32 px images below are 16 x 16 tokens (VAE factor 1, 2 x 2 packing)


@pytest.fixture(scope="module")
def pipe():
    p = tiny_flux_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def generate(pipe, size: int, steps: int):
    return pipe(
        **prompt_embeddings(), height=size, width=size, num_inference_steps=steps, output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images


def shifted(sigmas: np.ndarray, mu: float) -> np.ndarray:
    """FLUX's exponential time shift, written out: sigma' = e^mu / (e^mu + 1 / sigma - 1)."""
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))


def test_generation_at_4x_sees_the_derived_t_kappa_and_shift(pipe):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    steps, lambda_s, lambda_t = 8, 1.5, 3.0
    raw, tables = [], []
    pre = pipe.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: raw.append(kwargs["timestep"].double()), with_kwargs=True
    )
    settings = dict(base_grid=(BASE, BASE), method="pi", lambda_s=lambda_s, lambda_t=lambda_t)
    with dype_rope.enable(pipe, 32, 32, **settings) as handle:
        post = pipe.transformer.pos_embed.register_forward_hook(lambda m, args, out: tables.append((args[0], out)))
        try:
            image = generate(pipe, 32, steps)
        finally:
            pre.remove()
            post.remove()
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
    assert handle.mu == 1.15 and handle.image_seq_len == 16 * 16

    # t: the pipeline's unshifted sigmas, shifted by the pinned mu = max_shift, as the transformer's argument.
    expected_t = shifted(np.linspace(1.0, 1 / steps, steps), mu=1.15)
    t_seen = np.array([r.item() for r in raw])
    assert len(t_seen) == len(tables) == steps and t_seen[0] == 1.0
    np.testing.assert_allclose(t_seen, expected_t, rtol=0, atol=1e-6)

    # The shift the transformer saw, read back from each step's t, is the pinned one, not the pipeline's own.
    sigma = np.linspace(1.0, 1 / steps, steps)[1:]
    mu_seen = np.log(t_seen[1:] * (1 / sigma - 1) / (1 - t_seen[1:]))
    np.testing.assert_allclose(mu_seen, 1.15, rtol=0, atol=1e-4)
    assert abs(calculate_shift(16 * 16) - 1.15) > 0.5

    # kappa, read back from the tables: Dy-PI turns pair 0 of the row and column axes by 1 / s ** kappa(t) per
    # position with s = 4 (16 tokens on a 4-token base); the frame axis keeps plain RoPE.
    for t, (ids, (cos, sin)) in zip(t_seen, tables):
        token = int(((ids[:, 1] == 1) & (ids[:, 2] == 1)).nonzero()[0])  # row 1, column 1
        angles = torch.atan2(sin[token, 0::2].double(), cos[token, 0::2].double())
        rows, cols = angles[2], angles[5]  # first pair of each rescaled axis (axes 4 / 6 / 6 channels)
        for angle in (rows, cols):
            kappa_seen = -math.log(angle.item()) / math.log(4.0)
            assert kappa_seen == pytest.approx(lambda_s * t**lambda_t, abs=1e-6)
        assert torch.equal(cos[token, :4], torch.ones(4)) and torch.equal(sin[token, :4], torch.zeros(4))


@pytest.mark.parametrize("height, width", [(16, 32), (32, 16)])
def test_a_non_square_image_sets_each_axis_and_the_token_count_from_its_own_side(pipe, height, width):
    """rows = height / 2, columns = width / 2 here (VAE factor 1, 2 x 2 packing): neither side stands in for the
    other, in the token count that sets mu or in the tables."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    tables = []
    with dype_rope.enable(pipe, height, width, shift="linear", base_grid=(BASE, BASE), method="pi",
                          lambda_s=1.0, lambda_t=1.0) as handle:
        hook = pipe.transformer.pos_embed.register_forward_hook(lambda m, args, out: tables.append((args[0], out)))
        try:
            pipe(**prompt_embeddings(), height=height, width=width, num_inference_steps=1, output_type="pt",
                 generator=torch.Generator().manual_seed(0))
        finally:
            hook.remove()
    rows, cols = height // 2, width // 2
    assert handle.image_seq_len == rows * cols
    assert handle.mu == pytest.approx(calculate_shift(rows * cols, 256, 4096, 0.5, 1.15))
    ids, (cos, sin) = tables[0]
    token = int(((ids[:, 1] == 1) & (ids[:, 2] == 1)).nonzero()[0])
    angles = torch.atan2(sin[token, 0::2].double(), cos[token, 0::2].double())
    # t = 1 at the first step: Dy-PI with kappa = t divides each axis's frequencies by its own s = side / base
    assert angles[2].item() == pytest.approx(BASE / rows, abs=1e-6)
    assert angles[5].item() == pytest.approx(BASE / cols, abs=1e-6)


def test_a_non_square_image_at_vae_factor_8_counts_its_own_tokens(pipe_at_vae_factor_8):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    with dype_rope.enable(pipe_at_vae_factor_8, 1024, 2048, shift="linear") as handle:
        assert handle.image_seq_len == 64 * 128
        assert handle.mu == pytest.approx(calculate_shift(64 * 128, 256, 4096, 0.5, 1.15))


@pytest.fixture(scope="module")
def pipe_at_vae_factor_8():
    return tiny_flux_pipeline(vae_blocks=4)


@pytest.mark.parametrize("shift, size", [("linear", 2048), ("linear", 4096), ("pinned", 4096), (0.7, 4096)])
def test_policies_pin_the_documented_mu_whatever_the_caller_passes(pipe_at_vae_factor_8, shift, size):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    pipe = pipe_at_vae_factor_8
    tokens = (size // 16) ** 2  # FLUX: VAE factor 8, 2 x 2 packing
    expected = {"linear": calculate_shift(tokens, 256, 4096, 0.5, 1.15), "pinned": 1.15}.get(shift, shift)
    sigmas = np.linspace(1.0, 1 / 6, 6)
    with dype_rope.enable(pipe, size, size, shift=shift) as handle:
        assert handle.mu == expected and handle.image_seq_len == tokens
        assert "sigmas" in inspect.signature(pipe.scheduler.set_timesteps).parameters
        pipe.scheduler.set_timesteps(sigmas=sigmas, mu=-3.0)
        got = pipe.scheduler.sigmas[:-1].double().numpy()
    np.testing.assert_allclose(got, shifted(sigmas, expected), rtol=0, atol=1e-6)


def test_remove_restores_scheduler_and_transformer_exactly(pipe):
    before = generate(pipe, 16, 4)
    scheduler, transformer = pipe.scheduler, pipe.transformer
    config = scheduler._internal_dict
    pos_embed = transformer.pos_embed
    handle = dype_rope.enable(pipe, 16, 16, shift=2.0, base_grid=(BASE, BASE))
    assert scheduler.config.use_dynamic_shifting and "set_timesteps" in vars(scheduler)
    assert not torch.equal(generate(pipe, 16, 4), before)
    handle.remove()
    assert scheduler._internal_dict is config and "set_timesteps" not in vars(scheduler)
    assert not dype_rope.is_patched(transformer) and transformer.pos_embed is pos_embed
    assert not transformer._forward_pre_hooks and not transformer._forward_hooks
    assert not handle.active
    handle.remove()  # idempotent
    assert torch.equal(generate(pipe, 16, 4), before)


def test_a_fixed_shift_scheduler_gets_dynamic_shifting_for_the_call():
    """SD3's scheduler uses a fixed shift (use_dynamic_shifting False); enable() turns the pinned mu on."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from families.sd3 import tiny_sd3

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    fake = SimpleNamespace(transformer=tiny_sd3(), scheduler=scheduler, vae_scale_factor=8)
    with dype_rope.enable(fake, 1024, 1024) as handle:
        assert handle.image_seq_len == 128 * 128  # patch size 1 in the tiny config: 8 px per token
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / 10, 10))  # without mu: the pinned one applies
        got = scheduler.sigmas[:-1].double().numpy()
    np.testing.assert_allclose(got, shifted(np.linspace(1.0, 1 / 10, 10), 1.15), rtol=0, atol=1e-6)
    assert not scheduler.config.use_dynamic_shifting


# -- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(shift="auto"), ValueError, "unknown shift policy"),
        (dict(shift=True), TypeError, "shift must be"),
        (dict(shift=float("nan")), ValueError, "finite"),
        (dict(height=0), ValueError, "height"),
        (dict(method="bogus"), ValueError, "unknown method"),
    ],
)
def test_bad_arguments_are_named_and_leave_the_pipeline_untouched(pipe, kwargs, error, message):
    config = pipe.scheduler._internal_dict
    call = dict(height=32, width=32) | kwargs
    with pytest.raises(error, match=message):
        dype_rope.enable(pipe, **call)
    assert pipe.scheduler._internal_dict is config and "set_timesteps" not in vars(pipe.scheduler)
    assert not dype_rope.is_patched(pipe.transformer)


def test_schedulers_without_a_shift_are_refused():
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    from families.flux import tiny_flux

    plain = SimpleNamespace(transformer=tiny_flux(), scheduler=DDIMScheduler(), vae_scale_factor=8)
    with pytest.raises(TypeError, match="takes mu"):
        dype_rope.enable(plain, 64, 64)
    linear = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="linear")
    cogview_like = SimpleNamespace(transformer=plain.transformer, scheduler=linear, vae_scale_factor=8)
    with pytest.raises(ValueError, match="time_shift_type"):
        dype_rope.enable(cogview_like, 64, 64)
    with dype_rope.enable(cogview_like, 64, 64, shift=2.5) as handle:  # an explicit mu is always accepted
        assert handle.mu == 2.5
    assert not dype_rope.is_patched(plain.transformer)


def test_enabling_twice_is_refused_and_keeps_the_first(pipe):
    with dype_rope.enable(pipe, 32, 32) as first:
        with pytest.raises(RuntimeError, match="twice"):
            dype_rope.enable(pipe, 32, 32)
        assert first.active and dype_rope.is_patched(pipe.transformer)
    assert not dype_rope.is_patched(pipe.transformer)
