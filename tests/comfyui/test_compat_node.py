"""DyPE_Compat, the node with ComfyUI-DyPE's inputs: its schema against ComfyUI-DyPE's documented interface (written
here as literals), the tables every method gives at every step against float64 references written from
ComfyUI-DyPE's equations (tests/reference_vision_yarn.py, tests/reference_dype.py), the noise shift against
ComfyUI's own ModelSamplingFlux node, and what it does where ComfyUI-DyPE is wrong (docs/comfyui.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from reference_dype import frequencies
from reference_vision_yarn import vision_yarn_axis, yarn_axis
from test_comfy_contract import BASE, Tiny
from test_node import validate

ROOT = Path(__file__).resolve().parents[2]
BASE_PX = BASE[0] * 16  # the tiny FLUX / Qwen models: 16 px per token

# ComfyUI-DyPE v2.3.0's node, input by input, in its order: (name, ComfyUI type, default)
COMFYUI_DYPE_INPUTS = [
    ("model", "MODEL", None),
    ("width", "INT", 1024),
    ("height", "INT", 1024),
    ("model_type", "COMBO", "auto"),
    ("method", "COMBO", "vision_yarn"),
    ("yarn_alt_scaling", "BOOLEAN", False),
    ("enable_dype", "BOOLEAN", True),
    ("dype_scale", "FLOAT", 2.0),
    ("dype_exponent", "FLOAT", 2.0),
    ("base_resolution", "INT", 1024),
    ("dype_start_sigma", "FLOAT", 1.0),
    ("base_shift", "FLOAT", 0.5),
    ("max_shift", "FLOAT", 1.15),
]


@pytest.fixture(scope="module")
def compat_cls(comfy):
    import nodes

    assert asyncio.run(nodes.load_custom_node(str(ROOT))) is True
    return nodes.NODE_CLASS_MAPPINGS["DyPE_Compat"]


@pytest.fixture
def flux(comfy):
    return Tiny(comfy, "flux")


def compat(compat_cls, model, **settings):
    settings = dict(width=BASE_PX, height=BASE_PX, base_resolution=BASE_PX) | settings
    return compat_cls.execute(model=model, **settings).args[0]


def test_loaded_by_comfyui_with_comfyui_dypes_inputs(compat_cls):
    import nodes

    schema = compat_cls.GET_SCHEMA()
    assert schema.node_id == "DyPE_Compat"
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["DyPE_Compat"] == "DyPE (ComfyUI-DyPE settings)"
    assert [(i.id, i.get_io_type(), getattr(i, "default", None)) for i in schema.inputs] == COMFYUI_DYPE_INPUTS
    inputs = {i.id: i for i in schema.inputs}
    assert inputs["method"].options == ["vision_yarn", "yarn", "ntk", "base"]
    assert inputs["model_type"].options[0] == "auto"
    assert [o.io_type for o in schema.outputs] == ["MODEL"]


def test_a_comfyui_dype_workflow_validates_with_the_node_type_replaced(compat_cls, monkeypatch):
    values = {name: default for name, _, default in COMFYUI_DYPE_INPUTS[1:]} | {"width": 4096, "height": 2048}
    node = {"class_type": "DyPE_Compat", "inputs": {"model": ["1", 0]} | values}
    valid, report = validate({"2": node}, monkeypatch)
    assert valid, report


# -- the tables of every method, step by step -------------------------------------------------------------------

def reference_tables(ids, axes_dims, theta, scales, t, base, axis_ref):
    """float64 rotation matrices [L, D/2, 2, 2] of the rescaled axes (1, 2) from axis_ref(dim, s_axis, s_image, t)."""
    pos = ids.double()
    angles, ms = [], []
    s_image = max(scales[1], scales[2])
    for a, dim in enumerate(axes_dims):
        if a == 0:
            omega, m = np.array([theta ** (-2.0 * j / dim) for j in range(dim // 2)]), 1.0
        else:
            omega, m = axis_ref(dim, theta, base, scales[a], s_image, t)
        angles.append(pos[:, a, None] * torch.from_numpy(omega))
        ms.append(torch.full((dim // 2,), m, dtype=torch.float64))
    angles, m = torch.cat(angles, -1), torch.cat(ms)
    cos, sin = angles.cos() * m, angles.sin() * m
    return torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))


def comfyui_dype_reference(method, alt, enable=True, start=1.0):
    """ComfyUI-DyPE's per-axis equations for each of its methods (defaults dype_scale = dype_exponent = 2)."""
    def ref(dim, theta, base, s, s_image, t):
        if method == "vision_yarn":
            return vision_yarn_axis(dim, theta, base, s, s_image, t, dynamic=enable, start_sigma=start)
        if method == "yarn" and alt:  # each axis its own ratio, 0.1 ln s + 1
            return yarn_axis(dim, theta, base, s, t, dynamic=enable)
        if method == "yarn":  # the larger ratio on both axes, 1 + 0.1 ln(s) / sqrt(s)
            return yarn_axis(dim, theta, base, s_image, t, dynamic=enable, form="log_sqrt")
        dynamic = enable and method == "ntk"  # "base" is static NTK
        return frequencies(dim, theta, base, s_image, t, "ntk", dynamic, lambdas=(2.0, 2.0))
    return ref


CASES = [
    ("vision_yarn", False, True, 1.0),
    ("vision_yarn", False, True, 0.6),
    ("vision_yarn", False, False, 1.0),
    ("yarn", True, True, 1.0),
    ("yarn", False, True, 1.0),
    ("yarn", False, False, 1.0),
    ("ntk", False, True, 1.0),
    ("ntk", False, False, 1.0),
    ("base", False, True, 1.0),
]


@pytest.mark.parametrize("rows, cols", [(16, 16), (6, 16), (20, 12)])
@pytest.mark.parametrize("method, alt, enable, start", CASES, ids=lambda v: str(v))
def test_tables_follow_comfyui_dypes_equations(compat_cls, flux, method, alt, enable, start, rows, cols):
    """Square, non-square, and one axis below the base grid (6 of 8 tokens: Vision-YaRN still gives it the
    image's ratio on its high frequencies and its temperature)."""
    patched = compat(compat_cls, flux.patcher, method=method, yarn_alt_scaling=alt, enable_dype=enable,
                     dype_start_sigma=start)
    out, calls = flux.record(patched, rows, cols)
    assert torch.isfinite(out).all()
    emb = flux.embedders(patched)[0]
    axes_dims, theta = [int(d) for d in emb.axes_dim], float(emb.theta)
    scales = [1.0, rows / BASE[0], cols / BASE[1]]
    ref = comfyui_dype_reference(method, alt, enable, start)
    index_pairs = axes_dims[0] // 2
    for call in calls:
        for ids, table in call["tables"]:
            table = table.reshape(table.shape[0], -1, *table.shape[-3:])
            stock = emb.original(ids).reshape(table.shape)
            assert torch.equal(table[..., :index_pairs, :, :], stock[..., :index_pairs, :, :])
            for b, t in enumerate(call["sigma"].tolist()):
                expected = reference_tables(ids[min(b, ids.shape[0] - 1)], axes_dims, theta, scales, t, BASE[0], ref)
                torch.testing.assert_close(table[b][..., index_pairs:, :, :], expected[..., index_pairs:, :, :].float(),
                                           rtol=1e-5, atol=2e-6)


def test_the_methods_are_told_apart(compat_cls, flux):
    """Each ComfyUI-DyPE method (and yarn_alt_scaling) is a different model above the base grid."""
    samples = {}
    for method, alt in (("vision_yarn", False), ("yarn", True), ("yarn", False), ("ntk", False), ("base", False)):
        samples[(method, alt)] = flux.sample(compat(compat_cls, flux.patcher, method=method, yarn_alt_scaling=alt),
                                             6, 16)
    values = list(samples.values())
    assert all(not torch.equal(a, b) for i, a in enumerate(values) for b in values[i + 1:])


# -- the noise shift ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width, height, base_shift, max_shift", [
    (2048, 2048, 0.5, 1.15), (3072, 1024, 0.5, 1.15), (2048, 1536, 0.3, 1.6),
])
def test_noise_shift_above_the_base_is_comfyuis_line(compat_cls, flux, width, height, base_shift, max_shift):
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux

    patched = compat(compat_cls, flux.patcher, width=width, height=height, base_resolution=1024,
                     base_shift=base_shift, max_shift=max_shift)
    (expected,) = ModelSamplingFlux().patch(flux.patcher, max_shift, base_shift, width, height)
    torch.testing.assert_close(patched.get_model_object("model_sampling").sigmas,
                               expected.get_model_object("model_sampling").sigmas, rtol=1e-6, atol=0)
    assert "model_sampling" not in flux.patcher.object_patches


@pytest.mark.parametrize("width, height", [(1024, 1024), (768, 1024), (512, 512)])
def test_at_or_below_the_base_resolution_the_model_samples_as_stock(compat_cls, flux, width, height):
    """ComfyUI-DyPE sets ComfyUI's line there too (0.85 at 768 x 768 where FLUX samples with 1.15); this node leaves
    the model's own schedule and, at the tiny model's base grid, its every output bit for bit."""
    patched = compat(compat_cls, flux.patcher, width=width, height=height, base_resolution=1024, base_shift=0.3)
    assert "model_sampling" not in patched.object_patches
    at_base = compat(compat_cls, flux.patcher, width=BASE_PX, height=BASE_PX)
    assert torch.equal(flux.sample(at_base, *BASE), flux.sample(flux.patcher, *BASE))
    assert torch.equal(flux.sample(at_base, 6, 8), flux.sample(flux.patcher, 6, 8))


def test_the_shared_model_is_never_written(compat_cls, flux):
    """Two runs of the node on one input with one setting changed each keep their own shift and tables; the input
    patcher and its diffusion model carry nothing of either."""
    model = flux.patcher.get_model_object("diffusion_model")
    before = set(vars(model))
    a = compat(compat_cls, flux.patcher, width=2048, height=2048, base_resolution=1024, max_shift=1.15)
    b = compat(compat_cls, flux.patcher, width=2048, height=2048, base_resolution=1024, max_shift=2.0)
    shift_a = a.get_model_object("model_sampling").shift
    sample_a = flux.sample(a, 16, 12)
    flux.sample(b, 16, 12)
    assert a.get_model_object("model_sampling").shift == shift_a != b.get_model_object("model_sampling").shift
    assert torch.equal(flux.sample(a, 16, 12), sample_a)
    assert set(vars(model)) == before and not flux.patcher.object_patches
    assert not any(k.startswith("_dype") for k in vars(model))


# -- where ComfyUI-DyPE is wrong ----------------------------------------------------------------------------------

def test_qwen_image_is_measured_by_its_image_not_its_caption(compat_cls, comfy):
    """ComfyUI-DyPE measures Qwen-Image's extent from the ids, caption included: the scale grows with the prompt and
    the model extrapolates already at its native size. Here: stock at the base grid whatever the caption, and above
    it the image's own ratio."""
    qwen = Tiny(comfy, "qwen_image")
    patched = compat(compat_cls, qwen.patcher, model_type="qwen")
    assert torch.equal(qwen.sample(patched, *BASE), qwen.sample(qwen.patcher, *BASE))
    long_caption = [[torch.randn(1, 40, 32, generator=torch.Generator().manual_seed(3)), {}]]
    assert torch.equal(qwen.sample(patched, *BASE, positive=long_caption),
                       qwen.sample(qwen.patcher, *BASE, positive=long_caption))
    out, calls = qwen.record(patched, 16, 12)
    emb = qwen.embedders(patched)[0]
    axes_dims, theta = [int(d) for d in emb.axes_dim], float(emb.theta)
    ref = comfyui_dype_reference("vision_yarn", False)
    half = axes_dims[0] // 2
    for call in calls:
        for ids, table in call["tables"]:
            table = table.reshape(table.shape[0], -1, *table.shape[-3:])
            expected = reference_tables(ids[0], axes_dims, theta, [1.0, 2.0, 1.5], float(call["sigma"][0]), BASE[0], ref)
            torch.testing.assert_close(table[0][..., half:, :, :], expected[..., half:, :, :].float(), rtol=1e-5,
                                       atol=2e-6)


def test_z_image_is_patched(compat_cls, comfy):
    z = Tiny(comfy, "z_image")
    patched = compat(compat_cls, z.patcher, model_type="zimage")
    assert torch.equal(z.sample(patched, *BASE), z.sample(z.patcher, *BASE))
    large = z.sample(patched, 16, 12)
    assert torch.isfinite(large).all() and not torch.equal(large, z.sample(z.patcher, 16, 12))
    assert "model_sampling" not in patched.object_patches  # a constant-shift model keeps its schedule


BAD = [
    (dict(model_type="qwen"), "model_type 'qwen' does not match this model, a flux model"),
    (dict(model_type="sdxl"), "model_type must be one of"),
    (dict(method="pi"), "method must be one of"),
    (dict(dype_scale=0.0), "dype_scale must be > 0"),
    (dict(dype_exponent=-1.0), "dype_exponent must be a number >= 0.0"),
    (dict(dype_start_sigma=1.5), "dype_start_sigma must be a number from 0.0 to 1.0"),
    (dict(base_resolution=8), "base_resolution must be a whole number from 16"),
    (dict(width=0), "width must be a whole number from 16"),
    (dict(enable_dype="yes"), "enable_dype must be a bool"),
    (dict(base_shift=float("nan")), "base_shift must be a number"),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[m.split()[0] for _, m in BAD])
def test_inputs_that_make_no_sense_are_refused_by_name(compat_cls, flux, kwargs, message):
    from dype_rope.adapters.comfyui.node import NodeInputError

    with pytest.raises(NodeInputError, match=message):
        compat(compat_cls, flux.patcher, **kwargs)


# -- the migration table of docs/comfyui.md: each ComfyUI-DyPE setting and its DyPE-node equivalent ---------------

MIGRATION = [
    (dict(method="vision_yarn"), dict(method="vision_yarn")),
    (dict(method="vision_yarn", dype_start_sigma=0.5, dype_scale=1.5, dype_exponent=1.0),
     dict(method="vision_yarn", start_sigma=0.5, lambda_s=1.5, lambda_t=1.0)),
    (dict(method="yarn", yarn_alt_scaling=True), dict(method="yarn", yarn_modulation="power")),
    (dict(method="yarn"), dict(method="yarn", yarn_modulation="power", aspect="isotropic", mscale="log_sqrt")),
    (dict(method="ntk"), dict(method="ntk", aspect="isotropic")),
    (dict(method="base"), dict(method="ntk", dynamic=False, aspect="isotropic")),
    (dict(method="vision_yarn", enable_dype=False), dict(method="vision_yarn", dynamic=False)),
    (dict(method="yarn", width=2048, height=1024, base_resolution=1024, base_shift=0.4, max_shift=1.3),
     dict(method="yarn", yarn_modulation="power", aspect="isotropic", mscale="log_sqrt", base_resolution=1024,
          width=2048, height=1024, shift="linear", base_shift=0.4, max_shift=1.3)),
]


@pytest.mark.parametrize("theirs, ours", MIGRATION, ids=[str(m[0]) for m in MIGRATION])
def test_the_migration_table_holds(compat_cls, flux, theirs, ours):
    from dype_rope.adapters.comfyui.node import dype_model

    a = compat(compat_cls, flux.patcher, **theirs)
    b = dype_model(flux.patcher, **(dict(base_resolution=BASE_PX) | ours))
    assert torch.equal(flux.sample(a, 6, 16), flux.sample(b, 6, 16))
    sigmas = [p.get_model_object("model_sampling").sigmas for p in (a, b)]
    assert torch.equal(*sigmas)


def test_compiled_vision_yarn_keeps_stock_graph_count(compat_cls, flux):
    """Vision-YaRN's global ratio is one more device op inside the plan: the compiled FLUX model stays as many
    graphs as stock, and gives the eager result."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from torch._dynamo.testing import CompileCounter

    counts = []
    for patcher in (flux.patcher, compat(compat_cls, flux.patcher)):
        torch._dynamo.reset()
        clone, counter = patcher.clone(), CompileCounter()
        set_torch_compile_wrapper(clone, backend=counter)
        eager = flux.sample(patcher, 6, 16)
        compiled = flux.sample(clone, 6, 16)
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
        counts.append(counter.frame_count)
    torch._dynamo.reset()
    assert counts[1] == counts[0], f"stock compiles to {counts[0]} graph(s), DyPE_Compat to {counts[1]}"
