"""The ComfyUI side of the coverage report and the refusals: every diffusion model ComfyUI 0.29.0 builds is
supported (by a row whose class it is), refused with its reason, without positions, or listed as not yet
covered in docs/comfyui_models.md; and patching a refused model raises that reason, both ways in."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import dype_rope
from dype_rope.adapters.comfyui import FAMILIES, NO_POSITIONS, REFUSED, comfy_adapter_class

DOC = Path(__file__).resolve().parents[2] / "docs" / "comfyui_models.md"


def bare(cls: type) -> torch.nn.Module:
    """An instance of `cls` without its constructor (no weights): what the tables match is the class."""
    module = cls.__new__(cls)
    torch.nn.Module.__init__(module)
    return module


@pytest.fixture(scope="module")
def coverage(comfy):
    from dype_rope.adapters.comfyui.coverage import comfy_coverage

    return comfy_coverage()


def test_every_entry_has_the_report_keys(coverage):
    assert coverage, "no ComfyUI diffusion-model class found"
    for entry in coverage:
        assert set(entry) == {"host", "class", "status", "detail"} and entry["host"] == "comfyui"
        assert entry["status"] in ("supported", "refused", "unknown") and entry["detail"]


def test_the_report_holds_every_class_comfyui_builds(comfy, coverage):
    """Read independently of the report's own scan: every diffusion model of a supported_models config."""
    import comfy.model_base  # noqa: F401
    import comfy.supported_models as sm

    listed = {e["class"] for e in coverage} | set(NO_POSITIONS)
    for name in ("comfy.ldm.flux.model.Flux", "comfy.ldm.genmo.joint_model.asymm_models_joint.AsymmDiTJoint",
                 "comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel", "comfy.ldm.lightricks.model.LTXVModel",
                 "comfy.ldm.kandinsky5.model.Kandinsky5", "comfy.ldm.ernie.model.ErnieImageModel"):
        assert name in listed
    assert len(sm.models) > 40


def resolve(name: str) -> type:
    import importlib

    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def test_supported_and_refused_entries_match_the_tables(coverage):
    for entry in coverage:
        mro = [f"{c.__module__}.{c.__qualname__}" for c in resolve(entry["class"]).__mro__]
        # the rows of the most specific class along the MRO that has any (Anima before Predict2's class)
        rows = next(([f.name for f in FAMILIES if c in f.classes] for c in mro
                     if any(c in f.classes for f in FAMILIES)), [])
        # the reason of the most specific refused class along the MRO (PiD's own before PixelDiT's)
        refused = [REFUSED[c] for c in mro if c in REFUSED][:1]
        if entry["status"] == "supported":
            assert entry["detail"] == ", ".join(rows) and not refused
        elif entry["status"] == "refused":
            assert refused == [entry["detail"]] and not rows
        else:
            assert not rows and not refused


def documented_gaps() -> set[str]:
    """The classes docs/comfyui_models.md lists under "Not yet covered"."""
    text = DOC.read_text()
    section = text.split("## Not yet covered", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(comfy\.ldm\.[\w.]+)`", section))


def test_nothing_unknown_beyond_the_documented_gaps(coverage):
    unknown = {e["class"] for e in coverage if e["status"] == "unknown"}
    assert unknown == documented_gaps()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_model_raises_its_reason(comfy, name):
    model = bare(resolve(name))
    with pytest.raises(TypeError, match=re.escape(REFUSED[name])):
        dype_rope.patch(model)
    with pytest.raises(TypeError, match=re.escape(REFUSED[name])):
        comfy_adapter_class(model)


def test_a_shared_class_picks_its_row_from_the_model_or_says_none_fits(comfy):
    """HunyuanVideo's class is two rows (3 id axes: HunyuanVideo; 2: HunyuanImage 2.1): the embedder decides."""
    from comfy.ldm.flux.layers import EmbedND
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    from dype_rope.adapters.comfyui import ADAPTERS

    expected = {3: "hunyuan_video", 2: "hunyuan_image"}
    for n, row in expected.items():
        model = bare(HunyuanVideo)
        model.pe_embedder = EmbedND(dim=8 * n, theta=256, axes_dim=[8] * n)
        assert comfy_adapter_class(model) is ADAPTERS[row]
    model = bare(HunyuanVideo)
    model.pe_embedder = EmbedND(dim=32, theta=256, axes_dim=[8] * 4)
    with pytest.raises(TypeError, match="has 4 id axes.*fits none of the DyPE rows"):
        comfy_adapter_class(model)
