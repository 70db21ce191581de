"""A patch's lifetime: a dropped model is freed with its patch, a handle kept after remove() lets the model go,
copying or pickling a patched model is refused with a message saying what to do, and a torch.compile wrapper is
patched through its original."""

from __future__ import annotations

import copy
import gc
import io
import pickle
import weakref

import pytest
import torch
import torch._dynamo.testing

import dype_rope
from families.angles_ernie import ERNIE_IMAGE
from families.flux import FLUX, tiny_flux
from families.ltx2 import LTX2, tiny_ltx2
from families.qwen_image import QWEN_IMAGE, tiny_qwen_image
from families.sd3 import SD3, tiny_sd3
from families.video import WAN, tiny_wan

BASE = (8, 8)

# (builder, inputs above the base grid, base grid): one family per way of installing a patch (a replaced
# position module, a module swapped with its context-parallel hooks, an instance attribute on PatchEmbed)
FAMILIES = {
    "flux": (tiny_flux, lambda: FLUX.inputs((12, 16), 0.7), BASE),
    "qwen-image": (tiny_qwen_image, lambda: QWEN_IMAGE.inputs((12, 16), 0.7), BASE),
    "wan": (tiny_wan, lambda: WAN.inputs((2, 12, 16), 0.7), BASE),
    "sd3": (tiny_sd3, lambda: SD3.inputs((12, 10), 0.7), BASE),  # within its stored 12 x 12 grid
    # attention processors swapped besides the position module (the angles mechanism's attention factor)
    "ernie-image": (ERNIE_IMAGE.build, lambda: ERNIE_IMAGE.inputs((12, 16), 0.7), BASE),
    "ltx2": (tiny_ltx2, lambda: LTX2.inputs((2, 6, 7), 0.7), (3, 4)),  # a swapped module with wrapper methods
}


def run(model, inputs):
    with torch.no_grad():
        return model(**{**inputs, "return_dict": False})[0]


def collected(ref: weakref.ref) -> bool:
    gc.collect()
    return ref() is None


@pytest.mark.parametrize("family", FAMILIES)
def test_a_dropped_patched_model_is_freed_without_remove(family):
    build, inputs, base = FAMILIES[family]
    model = build()
    handle = dype_rope.patch(model, base_grid=base)
    run(model, inputs())
    ref = weakref.ref(model)
    del model, handle
    assert collected(ref), "the patch kept the model alive"


def test_a_dropped_model_is_freed_while_its_handle_is_dropped_first():
    model = tiny_flux()
    dype_rope.patch(model, base_grid=BASE)  # the handle is never kept
    assert dype_rope.is_patched(model)  # the model keeps its own patch alive
    ref = weakref.ref(model)
    del model
    assert collected(ref)


def test_the_patch_lives_as_long_as_the_model_even_without_the_handle():
    model, x = tiny_flux(), FLUX.inputs((12, 16), 0.7)
    stock = run(model, x)
    dype_rope.patch(model, base_grid=BASE)
    gc.collect()
    patched = run(model, x)
    assert not torch.equal(patched, stock)
    dype_rope.unpatch(model)
    assert torch.equal(run(model, x), stock) and not dype_rope.is_patched(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_handle_kept_after_remove_lets_the_model_go(family):
    build, inputs, base = FAMILIES[family]
    model = build()
    handle = dype_rope.patch(model, base_grid=base)
    run(model, inputs())
    assert handle.model is model
    handle.remove()
    assert handle.model is None and not handle.active  # as docs/api.md says
    ref = weakref.ref(model)
    del model
    assert collected(ref), "the removed handle kept the model alive"
    handle.remove()  # still a no-op
    assert "removed" in repr(handle)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_kept_active_handle_lets_a_dropped_model_go(family):
    build, inputs, base = FAMILIES[family]
    model = build()
    handle = dype_rope.patch(model, base_grid=base)
    run(model, inputs())
    assert handle.adapter is not None and handle.model is model
    ref = weakref.ref(model)
    del model
    assert collected(ref), "the kept handle kept the model alive"
    assert handle.model is None and not handle.active and handle.adapter is None
    assert handle.base_grid == base and handle.config.method == "yarn" and "removed" in repr(handle)
    handle.remove()  # nothing left to undo


def test_a_kept_pipeline_handle_lets_a_dropped_pipeline_go():
    from tiny_pipeline import tiny_flux_pipeline

    pipe = tiny_flux_pipeline()
    handle = dype_rope.enable(pipe, height=64, width=64, base_grid=(2, 2))
    assert handle.transformer.model is pipe.transformer
    refs = [weakref.ref(pipe), weakref.ref(pipe.transformer)]
    pipe = None
    gc.collect()
    assert all(r() is None for r in refs), "the kept pipeline handle kept the transformer alive"
    assert not handle.transformer.active


def test_ten_dropped_models_leave_no_live_model():
    refs = []
    for seed in range(10):
        model = tiny_flux(seed=seed)
        dype_rope.patch(model, base_grid=BASE)
        run(model, FLUX.inputs((12, 16), 0.5))
        refs.append(weakref.ref(model))
        del model
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


# -- copy and pickle -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_deepcopy_of_a_patched_model_is_refused_with_what_to_do(family):
    build, inputs, base = FAMILIES[family]
    model = build()
    x = inputs()
    stock = run(model, x)
    with dype_rope.patch(model, base_grid=base):
        patched = run(model, x)
        with pytest.raises(TypeError, match=r"deepcopy of a model patched by dype_rope.*before dype_rope.patch\(\)"):
            copy.deepcopy(model)
        assert torch.equal(run(model, x), patched)  # the refused copy left the original patched and working
    assert torch.equal(run(model, x), stock)
    clone = copy.deepcopy(model)  # unpatched again: copies as usual
    with dype_rope.patch(clone, base_grid=base):
        assert torch.equal(run(clone, x), patched) and not dype_rope.is_patched(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_pickling_a_patched_model_is_refused_with_what_to_do(family):
    build, _, base = FAMILIES[family]
    model = build()
    keys = set(model.state_dict())
    with dype_rope.patch(model, base_grid=base):
        with pytest.raises(TypeError, match=r"cannot be pickled.*state_dict\(\)"):
            torch.save(model, io.BytesIO())
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(model)
        assert set(model.state_dict()) == keys  # what the message recommends saving works and is unchanged
        torch.save(model.state_dict(), io.BytesIO())
    torch.save(model, io.BytesIO())  # after remove() the model pickles as usual


# -- torch.compile wrappers ------------------------------------------------------------------------------------

def test_patching_a_compiled_model_patches_its_original():
    model, x = tiny_flux(), FLUX.inputs((12, 16), 0.7)
    stock = run(model, x)
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    handle = dype_rope.patch(compiled, base_grid=BASE)
    assert handle.model is model and dype_rope.is_patched(compiled) and dype_rope.is_patched(model)
    with dype_rope.patch(tiny_flux(), base_grid=BASE) as eager_handle:
        expected = run(eager_handle.model, x)
    torch.testing.assert_close(run(compiled, x), expected, rtol=1e-6, atol=1e-6)
    assert counter.frame_count == 1
    dype_rope.unpatch(compiled)
    assert not dype_rope.is_patched(model)
    assert torch.equal(run(model, x), stock)


def test_triton_on_a_cpu_model_is_refused_at_patch(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # no interpreter: the kernels could only run on CUDA
    model = tiny_flux()
    with pytest.raises(ValueError, match=r"backend='triton' needs the model on a CUDA device.*cpu"):
        dype_rope.patch(model, base_grid=BASE, backend="triton")
    assert not dype_rope.is_patched(model) and not model._forward_pre_hooks
