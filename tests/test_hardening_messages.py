"""Every message in docs/troubleshooting.md's table of library errors is what the library says: each row is
triggered by the input its cause names, and every row has such a trigger."""

from __future__ import annotations

import copy
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import dype_rope
from families.cogview4 import tiny_cogview4
from families.flux import FLUX, flux_img_ids, tiny_flux
from families.qwen_image import tiny_qwen_image

DOC = Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.md"
BASE = (8, 8)


def documented_messages() -> list[str]:
    """The `message` column of the table under '## Errors you may meet'."""
    text = DOC.read_text()
    section = text.split("## Errors you may meet", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(.+?)` \|", section, flags=re.M)


def run(model, inputs):
    with torch.no_grad():
        return model(**inputs)


def patched(**kwargs):
    model = tiny_flux()
    dype_rope.patch(model, base_grid=BASE, **kwargs)
    return model


def mixed_batch():
    # FLUX plans per sample through its per-sample processors; a processor set after patching has none, so the
    # call plans once and a mixed batch is refused
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    model = patched()
    model.transformer_blocks[0].attn.set_processor(FluxAttnProcessor())
    run(model, FLUX.inputs_at((12, 16), torch.tensor([250.0, 750.0]), batch=2))  # sigmas 0.25 and 0.75


def outside_forward():
    patched().pos_embed(flux_img_ids(4, 4))


# message (as documented) -> what triggers it
TRIGGERS = {
    "this ... is already patched": lambda: dype_rope.patch(patched()),
    "this ... is not patched by dype_rope": lambda: dype_rope.unpatch(tiny_flux()),
    "... takes a torch.nn.Module, got ...": lambda: dype_rope.unpatch("x"),
    "dype_rope has no adapter for ...": lambda: dype_rope.patch(torch.nn.Linear(2, 2)),
    "unknown method ...": lambda: dype_rope.patch(tiny_flux(), method="linear"),
    "base_grid must be positive whole token counts (ints), got ...": lambda: dype_rope.patch(tiny_flux(), base_grid=64.0),
    "base_grid must be a number of tokens or a (height, width) sequence of them, got Tensor":
        lambda: dype_rope.patch(tiny_flux(), base_grid=torch.tensor([64, 64])),
    "base_resolution must be a number of pixels or a (height, width) sequence of them, got Tensor":
        lambda: dype_rope.patch(tiny_flux(), base_resolution=torch.tensor(1024)),
    "base_resolution must be positive, finite pixels, got ...":
        lambda: dype_rope.patch(tiny_flux(), base_resolution=math.inf),
    "base_resolution ... px is not a multiple of the model's ... px per token":
        lambda: dype_rope.patch(tiny_flux(), base_resolution=1000),
    "pass base_grid (tokens) or base_resolution (pixels), not both":
        lambda: dype_rope.patch(tiny_flux(), base_grid=8, base_resolution=128),
    "backend='triton' needs the model on a CUDA device, but its weights are on cpu":
        lambda: dype_rope.patch(tiny_flux(), backend="triton"),
    "backend='triton' is not supported for the ... family": lambda: dype_rope.patch(tiny_cogview4(), backend="triton"),
    "... use_layer3d_rope=True (Qwen-Image-Layered) are not supported; run them unpatched":
        lambda: dype_rope.patch(tiny_qwen_image(use_layer3d_rope=True)),
    "the model was called without a timestep": lambda: dype_rope.diffusion_time(None),
    "timestep must be a diffusion time in [0, 1]": lambda: run(patched(), FLUX.inputs((12, 16), 1.5)),
    "all samples of a batch must share one diffusion time where DyPE rescales": mixed_batch,
    "the DyPE position encoding of ... was called outside the model's forward": outside_forward,
    "copy.deepcopy of a model patched by dype_rope is not supported": lambda: copy.deepcopy(patched()),
    "a model patched by dype_rope cannot be pickled": lambda: torch.save(patched(), io.BytesIO()),
}


def as_pattern(documented: str) -> str:
    return ".*".join(re.escape(part) for part in documented.split("..."))


def test_every_documented_message_has_a_trigger_and_every_trigger_is_documented():
    assert documented_messages() == list(TRIGGERS)


@pytest.mark.parametrize("message", list(TRIGGERS))
def test_the_documented_message_is_what_the_library_says(message, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # as on a machine without the interpreter
    with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
        TRIGGERS[message]()
    assert re.search(as_pattern(message), str(info.value)), f"{str(info.value)!r} does not say {message!r}"


@pytest.mark.parametrize("bad", [64.0, (64.0, 64), torch.tensor(64), "64", (True, 8), (8, 8, 8, 8)])
def test_bad_base_grids_name_the_argument(bad):
    with pytest.raises((ValueError, TypeError), match="base_grid"):
        dype_rope.patch(tiny_flux(), base_grid=bad)


@pytest.mark.parametrize("bad", [math.inf, math.nan, -16, (1024, math.inf), torch.tensor(1024), "1024"])
def test_bad_base_resolutions_name_the_argument_and_the_problem(bad):
    with pytest.raises((ValueError, TypeError), match="base_resolution must be"):
        dype_rope.patch(tiny_flux(), base_resolution=bad)


@pytest.mark.parametrize("fn", [dype_rope.unpatch, dype_rope.is_patched])
@pytest.mark.parametrize("bad", ["x", None, 3])
def test_lookups_on_non_models_say_so(fn, bad):
    with pytest.raises(TypeError, match=r"takes a torch.nn.Module, got"):
        fn(bad)


@pytest.mark.parametrize(
    "kwargs, grid",
    [
        (dict(base_grid=(np.int64(8), np.int64(6))), (8, 6)),
        (dict(base_grid=np.int32(8)), (8, 8)),
        (dict(base_grid=tuple(np.array([8, 6]))), (8, 6)),
        (dict(base_resolution=np.int64(128)), (8, 8)),
        (dict(base_resolution=(np.int64(128), np.uint16(96))), (8, 6)),
        (dict(base_resolution=(np.float64(128.0), 96)), (8, 6)),
    ],
    ids=["int64-pair", "int32", "array-items", "int64-px", "int64-uint16-px", "float64-px"],
)
def test_numpy_integers_are_whole_numbers(kwargs, grid):
    model, x = tiny_flux(), FLUX.inputs((12, 16), 0.7)
    with dype_rope.patch(model, **kwargs) as handle:
        assert handle.base_grid == grid and all(type(g) is int for g in handle.base_grid)
        out = run(model, x).sample
    with dype_rope.patch(model, base_grid=grid):  # the same patch as plain ints
        assert torch.equal(run(model, x).sample, out)


@pytest.mark.parametrize("bad", [np.float64(64.0), (np.int64(64), np.float32(64)), np.bool_(True), np.int64(0)])
def test_numpy_values_that_are_not_whole_token_counts_are_still_refused(bad):
    with pytest.raises((ValueError, TypeError), match="base_grid"):
        dype_rope.patch(tiny_flux(), base_grid=bad)
