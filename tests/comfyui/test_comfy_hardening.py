"""The ComfyUI path pinned down where a one-line slip would otherwise pass: the token grid of odd latents,
rope_options on every family that reads them, rows and columns of the base grid, isotropic aspect, the families'
native grids, the call state of two threads, the pinned shift at other base resolutions, lambda_t = 0,
rope_options and sigmas outside their range, and a batch whose samples sit at different sigmas.

References are ComfyUI's own code (the position ids its models build, its ModelSamplingFlux node), numbers
derived by hand from the families' training resolutions, and the paper's float64 formulas (shared_code)."""

from __future__ import annotations

import math
import threading

import pytest
import torch

import dype_rope
import tiny_comfy
from dype_rope.adapters.comfyui import ADAPTERS
from dype_rope.adapters.comfyui.call import ComfyCall
from dype_rope.adapters.comfyui.patcher import APPLY_MODEL, DYPE_KEY
from dype_rope.config import DyPEConfig

BASE = (8, 8)


def node(comfy, name: str, **settings):
    """(stock patcher, DyPE clone by the node's function, positive, negative)."""
    from dype_rope.adapters.comfyui.node import dype_model

    patcher, positive, negative = tiny_comfy.build(name, 0)
    settings.setdefault("base_resolution", BASE[0] * tiny_comfy.FAMILIES[name].pixels_per_token)
    return patcher, dype_model(patcher, **settings), positive, negative


def adapter_of(patcher):
    """The adapter behind a DyPE clone: the owner of its apply_model wrapper."""
    (wrapper,) = patcher.wrappers[APPLY_MODEL][DYPE_KEY]
    return wrapper.__self__


def record(comfy, name, patcher, positive, negative, latent, steps=1):
    """Sample; for every embedder call, its ids and what the call in flight said (scales, rescaled axes)."""
    calls = []
    adapter = adapter_of(patcher)
    hooks = []
    for path in adapter.family.embedders:
        emb = patcher.object_patches[f"diffusion_model.{path}"]
        hooks.append(emb.register_forward_hook(
            lambda m, a, out: calls.append((a[0], m._state.call.scales, m._state.call.axes))))
    try:
        tiny_comfy.sample(comfy, name, patcher, positive, negative, latent, steps=steps, cfg=1.0)
    finally:
        for h in hooks:
            h.remove()
    assert calls, "the model embedded no positions through the replaced module"
    return calls


def extents(calls, axes) -> tuple[float, ...]:
    """Extent (max - min + 1) of the ids ComfyUI built on each axis, over every embedding of the calls (caption
    and padding ids sit at the grid's first position, 0, so they never widen it)."""
    return tuple(max(float(ids[..., a].amax() - ids[..., a].amin() + 1) for ids, _, _ in calls) for a in axes)


def image_latent(name: str, rows_px: int, cols_px: int) -> torch.Tensor:
    fam = tiny_comfy.FAMILIES[name]
    return torch.zeros(1, fam.channels, *((1,) if fam.video else ()), rows_px, cols_px)


# -- the token grid and rope_options ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["flux", "lumina2", "wan21"])
def test_odd_latents_count_the_token_the_model_pads_for(comfy, name):
    """17 x 16 latent pixels at patch 2: the model pads to 9 x 8 tokens (its ids say so) and DyPE scales rows by
    9 / 8; a floored grid would see 8 rows, the base, and leave them unscaled."""
    _, dype, positive, negative = node(comfy, name)
    calls = record(comfy, name, dype, positive, negative, image_latent(name, 17, 16))
    fam = adapter_of(dype).family
    assert extents(calls, fam.id_axes) == (9.0, 8.0)
    for _, scales, axes in calls:
        assert (scales[fam.id_axes[0]], scales[fam.id_axes[1]]) == (9 / 8, 1.0) and axes == (fam.id_axes[0],)


@pytest.mark.parametrize("name", ["flux", "lumina2", "z_image", "wan21"])
def test_rope_options_stretch_each_axis_by_its_own_scale(comfy, name):
    """scale_y stretches rows, scale_x columns, each to (n - 1) * scale + 1 positions: the extent of the ids the
    model builds, and the one DyPE scales by."""
    _, dype, positive, negative = node(comfy, name)
    dype = dype.clone()
    dype.model_options.setdefault("transformer_options", {})["rope_options"] = {"scale_x": 1.5, "scale_y": 0.75}
    rows, cols = 16, 12
    p = tiny_comfy.FAMILIES[name].patch
    calls = record(comfy, name, dype, positive, negative, image_latent(name, rows * p, cols * p))
    fam = adapter_of(dype).family
    want = ((rows - 1) * 0.75 + 1, (cols - 1) * 1.5 + 1)  # 12.25 rows, 17.5 columns
    assert extents(calls, fam.id_axes) == want  # ComfyUI's own ids
    for _, scales, _ in calls:
        assert (scales[fam.id_axes[0]], scales[fam.id_axes[1]]) == (want[0] / BASE[0], want[1] / BASE[1])


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
@pytest.mark.parametrize("key", ["scale_x", "scale_y"])
def test_rope_options_scales_that_are_not_positive_and_finite_are_refused(comfy, key, scale):
    adapter = ADAPTERS["flux"](tiny_comfy.make_model("flux").diffusion_model, DyPEConfig(), BASE)
    x = torch.zeros(1, 16, 32, 24)
    with pytest.raises(ValueError, match="rope_options scale must be a positive finite number"):
        adapter.start_call(x, torch.tensor([0.5]), {"rope_options": {key: scale}})


# -- the base grid: rows and columns, aspect, native grids --------------------------------------------------------

def test_rows_and_columns_of_the_base_grid_are_kept_apart(comfy):
    """Wan's native grid is 30 x 52 tokens: at that size nothing is rescaled (swapped, rows would be 30/52 and
    columns 52/30); a non-square base on a non-square image gives each axis its own ratio."""
    model = tiny_comfy.make_model("wan21").diffusion_model
    wan = ADAPTERS["wan"](model, DyPEConfig(), None)
    assert wan.base_grid == (30, 52)
    call = wan.start_call(torch.zeros(1, 16, 1, 60, 104), torch.tensor([0.5]), {})
    assert call.scales[1:] == (1.0, 1.0) and call.axes == ()
    call = ADAPTERS["wan"](model, DyPEConfig(), (8, 12)).start_call(torch.zeros(1, 16, 1, 32, 24), 0.5, {})
    assert call.scales[1:] == (2.0, 1.0) and call.axes == (1,)


def test_wan_at_its_native_resolution_samples_stock(comfy):
    """base_resolution 0: the family's native grid; Wan at 480 x 832 px (30 x 52 tokens) is stock, bit for bit."""
    patcher, dype, positive, negative = node(comfy, "wan21", base_resolution=0)
    latent = tiny_comfy.latent("wan21", 30, 52)
    stock = tiny_comfy.sample(comfy, "wan21", patcher, positive, negative, latent, steps=2, cfg=1.0)
    assert torch.equal(tiny_comfy.sample(comfy, "wan21", dype, positive, negative, latent, steps=2, cfg=1.0), stock)


# training resolutions in pixels / 16 px per token (Wan 2.2 5B: 704 x 1280 px / 32)
NATIVE = {"flux": (64, 64), "chroma": (64, 64), "qwen_image": (83, 83), "lumina2": (64, 64), "hidream": (64, 64),
          "hunyuan_video": (45, 80), "wan21": (30, 52), "krea2": (64, 64)}


@pytest.mark.parametrize("name", NATIVE)
def test_base_resolution_zero_is_the_familys_native_grid(comfy, name):
    _, dype, _, _ = node(comfy, name, base_resolution=0)
    assert adapter_of(dype).base_grid == NATIVE[name]


def test_isotropic_gives_both_axes_the_larger_ratio(comfy):
    model = tiny_comfy.make_model("flux").diffusion_model
    x = torch.zeros(1, 16, 32, 24)  # 16 x 12 tokens: ratios 2 and 1.5
    per_axis = ADAPTERS["flux"](model, DyPEConfig(), BASE).start_call(x, 0.5, {})
    isotropic = ADAPTERS["flux"](model, DyPEConfig(), BASE, "isotropic").start_call(x, 0.5, {})
    assert per_axis.scales == (1.0, 2.0, 1.5) and isotropic.scales == (1.0, 2.0, 2.0)


# -- the node's settings ------------------------------------------------------------------------------------------

def sigmas_at_mu(patcher, mu):
    """The sigmas of ComfyUI's own ModelSamplingFlux node at shift mu (its line flat at mu: base = max = mu)."""
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux

    (shifted,) = ModelSamplingFlux().patch(patcher, mu, mu, 1024, 1024)
    return shifted.get_model_object("model_sampling").sigmas


@pytest.mark.parametrize("base_px, below_px", [(512, 384), (768, 512)])
def test_the_pinned_shift_follows_the_base_resolution_whatever_it_is(comfy, base_px, below_px):
    """From the base resolution up: the model's own shift. Below it: the line from (256 tokens, base_shift 0.5) to
    (the base grid's tokens, the model's own shift), so a base read as 1024 px gives other sigmas."""
    patcher, above, _, _ = node(comfy, "flux", base_resolution=base_px, width=2048, height=1536, shift="pinned")
    stock_mu = float(patcher.get_model_object("model_sampling").shift)
    assert torch.equal(above.get_model_object("model_sampling").sigmas, sigmas_at_mu(patcher, stock_mu))
    _, below, _, _ = node(comfy, "flux", base_resolution=base_px, width=below_px, height=below_px, shift="pinned")
    tokens, base_tokens = (below_px / 16) ** 2, (base_px / 16) ** 2
    mu = 0.5 + (stock_mu - 0.5) * (tokens - 256) / (base_tokens - 256)  # by hand, from the line's two ends
    got = below.get_model_object("model_sampling").sigmas
    torch.testing.assert_close(got, sigmas_at_mu(patcher, mu), rtol=0, atol=1e-7)
    wrong_base = 0.5 + (stock_mu - 0.5) * (tokens - 256) / (4096 - 256)
    assert not torch.allclose(got, sigmas_at_mu(patcher, wrong_base), rtol=0, atol=1e-4)


def test_lambda_t_zero_is_kept_and_makes_the_plan_independent_of_sigma(comfy):
    """kappa(t) = lambda_s * t ** 0 = lambda_s at every step; -1 is the method's default, under which the plan
    moves with sigma."""
    _, zero, _, _ = node(comfy, "flux", lambda_t=0.0)
    _, default, _, _ = node(comfy, "flux", lambda_t=-1.0)
    assert adapter_of(zero).cfg.lambda_t == 0.0 and adapter_of(default).cfg.lambda_t == DyPEConfig().lambda_t != 0
    x = torch.zeros(1, 16, 32, 24)
    for adapter, constant in ((adapter_of(zero), True), (adapter_of(default), False)):
        plans = [adapter.build_plan(adapter.start_call(x, torch.tensor([s]), {}), torch.device("cpu"))
                 for s in (0.9, 0.2)]
        assert torch.equal(plans[0].inv_freq, plans[1].inv_freq) == constant


# -- sigma: outside [0, 1], and one per sample ---------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [-0.5, 1.5, math.nan])
def test_a_sigma_outside_0_1_is_refused_on_the_host_and_nan_on_the_device(comfy, sigma):
    adapter = ADAPTERS["flux"](tiny_comfy.make_model("flux").diffusion_model, DyPEConfig(), BASE)
    above, at_base = torch.zeros(1, 16, 32, 24), torch.zeros(1, 16, 16, 16)
    with pytest.raises(ValueError, match=r"called at sigma .*a diffusion time in \[0, 1\]"):
        adapter.start_call(above, torch.tensor([sigma]), {})
    adapter.start_call(at_base, torch.tensor([sigma]), {})  # nothing depends on sigma at the base grid
    # where the value is not read (a GPU tensor), the sample's rescaled pairs come out NaN, the others stay
    call = ComfyCall(sigma=torch.tensor([sigma, 0.5]), scales=(1.0, 2.0, 1.5), axes=(1, 2))
    plan = adapter.build_plan(call, torch.device("cpu"))
    rescaled = plan.pair_axis > 0
    assert plan.inv_freq[0, rescaled].isnan().all() and not plan.inv_freq[0, ~rescaled].isnan().any()
    alone = adapter.build_plan(ComfyCall(torch.tensor([0.5]), call.scales, call.axes), torch.device("cpu"))
    assert torch.equal(plan.inv_freq[1:], alone.inv_freq)


def direct_inputs(name: str, batch: int, rows: int, cols: int) -> dict:
    g = torch.Generator().manual_seed(3)
    fam = tiny_comfy.FAMILIES[name]
    x = torch.randn(1, fam.channels, *((1,) if fam.video else ()), rows * fam.patch, cols * fam.patch, generator=g)
    inputs = dict(x=x.expand(batch, *x.shape[1:]).clone(),
                  c_crossattn=torch.randn(1, 7, fam.txt_dim, generator=g).expand(batch, -1, -1).clone())
    if name == "flux":
        inputs.update(y=torch.randn(1, 32, generator=g).expand(batch, -1).clone(), guidance=torch.full((batch,), 3.5))
    if name == "lumina2":
        inputs.update(num_tokens=7)
    return inputs


@pytest.mark.parametrize("name", ["flux", "lumina2", "wan21"])  # Wan embeds ids of batch 1 for the whole batch
def test_a_direct_call_with_different_sigmas_plans_each_sample_at_its_own(comfy, name):
    """Each sample's tables are bit for bit those of the sample called alone; the outputs agree to the rounding
    of batched matrix products."""
    model = tiny_comfy.make_model(name)
    dm = model.diffusion_model
    sigmas = (0.9, 0.4)
    tables = []
    handle = dype_rope.patch(dm, base_grid=BASE)
    hook = dm.get_submodule(ADAPTERS[tiny_comfy.FAMILIES[name].adapter].family.embedders[-1]).register_forward_hook(
        lambda m, a, out: tables.append(out))

    def call(batch_sigmas):
        t = torch.tensor(batch_sigmas)
        with torch.no_grad():
            return model.apply_model(transformer_options={"sigmas": t}, t=t,
                                     **direct_inputs(name, len(batch_sigmas), 16, 12))

    try:
        both = call(sigmas)
        both_tables = tables[:]
        alone = []
        for s in sigmas:
            tables.clear()
            alone.append((call((s,)), tables[:]))
    finally:
        hook.remove()
        handle.remove()
    assert not torch.equal(alone[0][1][-1], alone[1][1][-1])
    for i, (out, own) in enumerate(alone):
        torch.testing.assert_close(both[i], out[0], rtol=1e-5, atol=1e-5)
        assert len(own) == len(both_tables)
        for b, a in zip(both_tables, own):
            assert b.shape[0] == len(sigmas) and torch.equal(b[i : i + 1], a)


# -- threads ---------------------------------------------------------------------------------------------------------

def test_two_threads_calling_one_patched_model_keep_their_own_calls(comfy):
    """Both calls are in flight before either embeds (a barrier in the embedder): a call state shared between
    threads would hand one thread the other's grid and sigma. Each thread's tables and output must be those of
    its call run alone."""
    model = tiny_comfy.make_model("flux")
    dm = model.diffusion_model
    jobs = {"a": ((16, 12), 0.9), "b": ((12, 16), 0.3)}

    def run(name):
        (rows, cols), sigma = jobs[name]
        t = torch.tensor([sigma])
        with torch.no_grad():
            return model.apply_model(transformer_options={"sigmas": t}, t=t, **direct_inputs("flux", 1, rows, cols))

    tables, outputs, errors = {}, {}, []
    with dype_rope.patch(dm, base_grid=BASE):
        record = dm.pe_embedder.register_forward_hook(
            lambda m, a, out: tables.__setitem__(threading.current_thread().name, out))
        alone = {}
        for name in jobs:
            alone[name] = (run(name), tables.pop(threading.current_thread().name))
        barrier = threading.Barrier(len(jobs), timeout=60)

        def both_in_flight(module, args):
            barrier.wait()  # returns the thread's index: not the pre-hook's return value (that would replace args)

        wait = dm.pe_embedder.register_forward_pre_hook(both_in_flight)

        def worker(name):
            try:
                outputs[name] = run(name)
            except BaseException as err:  # reported below, with the thread's name
                errors.append((name, repr(err)))
                barrier.abort()

        threads = [threading.Thread(target=worker, args=(n,), name=n) for n in jobs]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        wait.remove()
        record.remove()
    assert not errors, errors
    for name, (out, table) in alone.items():
        assert torch.equal(tables[name], table), name
        assert torch.equal(outputs[name], out), name


# -- one table for the call (rows whose tables have no batch axis: Cosmos, JoyImage, CogVideoX) ----------------------

def _plan(batch: int):
    from dype_rope.rope import RopePlan

    g = torch.Generator().manual_seed(5)
    inv = torch.rand(batch, 6, generator=g, dtype=torch.float64)
    return RopePlan(inv, 1 + inv, torch.tensor([0, 0, 1, 1, 2, 2]))


def test_one_table_for_the_call_takes_the_samples_shared_sigma():
    from dype_rope.adapters.comfyui.call import ComfyCall, one_plan_for_the_call

    plan = _plan(2)
    got = one_plan_for_the_call(ComfyCall(torch.tensor([0.7, 0.7]), (1.0, 2.0, 2.0), (1, 2)), plan)
    assert torch.equal(got.inv_freq, plan.inv_freq[:1]) and torch.equal(got.mscale, plan.mscale[:1])


def test_one_table_for_the_call_refuses_samples_at_different_sigmas():
    """Read on the host where that is free: a ValueError naming the problem, never the first sample's table."""
    from dype_rope.adapters.comfyui.call import ComfyCall, one_plan_for_the_call

    with pytest.raises(ValueError, match="share one diffusion time"):
        one_plan_for_the_call(ComfyCall(torch.tensor([0.9, 0.4]), (1.0, 2.0, 2.0), (1, 2)), _plan(2))


def test_one_table_for_the_call_gives_nan_for_mixed_sigmas_without_reading_them():
    """Under compile (as on a GPU) the sigmas are never read on the host: a mixed call's plan is NaN, decided on
    the device in one graph; a uniform call's is the first sample's."""
    import torch._dynamo.testing

    from dype_rope.adapters.comfyui.call import ComfyCall, one_plan_for_the_call

    plan = _plan(2)

    def first(sigma):
        got = one_plan_for_the_call(ComfyCall(sigma, (1.0, 2.0, 2.0), (1, 2)), plan)
        return got.inv_freq, got.mscale

    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(first, backend=counter, fullgraph=True)
    inv, mscale = compiled(torch.tensor([0.9, 0.4]))
    assert inv.isnan().all() and mscale.isnan().all()
    inv, mscale = compiled(torch.tensor([0.6, 0.6]))
    assert torch.equal(inv, plan.inv_freq[:1]) and torch.equal(mscale, plan.mscale[:1])
    assert counter.frame_count == 1
