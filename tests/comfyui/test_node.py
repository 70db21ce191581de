"""The DyPE node as ComfyUI sees it: loaded from the repository root by ComfyUI's own custom-node loader, its
schema, its answers to inputs that make no sense, the optional noise shift and what rope_options mean."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

import tiny_comfy
from shared_code import reference_rotations
from test_comfy_contract import BASE, Tiny

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def node_cls(comfy):
    import nodes

    assert asyncio.run(nodes.load_custom_node(str(ROOT))) is True
    return nodes.NODE_CLASS_MAPPINGS["DyPE"]


@pytest.fixture
def flux(comfy):
    return Tiny(comfy, "flux")


def test_loaded_by_comfyui_with_its_inputs(node_cls):
    schema = node_cls.GET_SCHEMA()
    inputs = {i.id: i for i in schema.inputs}
    assert schema.node_id == "DyPE" and [o.io_type for o in schema.outputs] == ["MODEL"]
    assert inputs["model"].io_type == "MODEL"
    assert inputs["method"].options == ["yarn", "vision_yarn", "ntk", "pi", "none"]
    assert inputs["method"].default == "yarn"
    assert inputs["base_resolution"].default == 0 and inputs["dynamic"].default is True
    advanced = {i.id for i in schema.inputs if i.advanced}
    assert advanced == {"lambda_s", "lambda_t", "aspect", "yarn_modulation", "width", "height", "shift", "mscale",
                        "start_sigma", "base_shift", "max_shift"}
    assert {i.id for i in schema.inputs if i.optional} == advanced  # a workflow may leave every one of them out
    assert inputs["yarn_modulation"].options == ["default", "multiply", "power"]
    assert inputs["mscale"].options == ["log", "log_sqrt"]
    assert (inputs["base_shift"].default, inputs["max_shift"].default) == (0.5, 1.15)  # ComfyUI's ModelSamplingFlux


def test_node_returns_a_dype_clone(node_cls, flux):
    out = node_cls.execute(model=flux.patcher, method="yarn", base_resolution=BASE[0] * 16, dynamic=True)
    patched = out.args[0]
    assert patched is not flux.patcher and patched.is_clone(flux.patcher)
    assert "diffusion_model.pe_embedder" in patched.object_patches
    assert not flux.patcher.object_patches  # the input model is untouched
    assert torch.equal(flux.sample(patched, 16, 12), flux.sample(flux.dype, 16, 12))


BAD_INPUTS = [
    (dict(base_resolution=1000), "base_resolution 1000 px is not a multiple"),
    (dict(base_resolution=-16), "base_resolution must be a whole number"),
    (dict(base_resolution=1024.5), "base_resolution must be a whole number"),
    (dict(method="rope2"), "unknown method 'rope2'"),
    (dict(dynamic="yes"), "dynamic must be a bool"),
    (dict(lambda_s=float("nan")), "lambda_s must be a finite number"),
    (dict(lambda_s=-1.0), "lambda_s must be > 0"),
    (dict(lambda_t=-0.5), "lambda_t must be >= 0, or -1"),
    (dict(aspect="square"), "aspect must be one of"),
    (dict(yarn_modulation="add"), "yarn_modulation must be one of"),
    (dict(mscale="sqrt"), "mscale must be one of"),
    (dict(method="ntk", mscale="log_sqrt"), "mscale='log_sqrt' sets YaRN's attention temperature"),
    (dict(start_sigma=0.5), "start_sigma=0.5 starts the decay"),
    (dict(method="vision_yarn", start_sigma=1.5), "start_sigma is a diffusion time from 0 to 1"),
    (dict(base_shift=float("inf")), "base_shift must be a finite number"),
    (dict(max_shift="1.15"), "max_shift must be a finite number"),
    (dict(width=2048), "set both width and height"),
    (dict(width=2048, height=-8), "height must be a whole number"),
    (dict(width=2048, height=2048, shift="cosine"), "shift must be one of"),
]


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS, ids=[m.split()[0] for _, m in BAD_INPUTS])
def test_inputs_that_make_no_sense_are_refused_by_the_node(node_cls, flux, kwargs, message):
    from dype_rope.adapters.comfyui.node import NodeInputError

    settings = dict(model=flux.patcher, method="yarn", base_resolution=0, dynamic=True) | kwargs
    with pytest.raises(NodeInputError, match=message):
        node_cls.execute(**settings)


def test_a_model_without_an_adapter_is_refused_by_name(node_cls, flux):
    from dype_rope.adapters.comfyui.node import NodeInputError

    other = flux.patcher.clone()
    other.add_object_patch("diffusion_model", torch.nn.Linear(2, 2))
    with pytest.raises(NodeInputError, match="no ComfyUI adapter for torch.nn.modules.linear.Linear"):
        node_cls.execute(model=other, method="yarn", base_resolution=0, dynamic=True)


def flux_node_sigmas(comfy, patcher, width, height):
    """The sigmas ComfyUI's own ModelSamplingFlux node gives for width x height (max 1.15, base 0.5)."""
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux

    (shifted,) = ModelSamplingFlux().patch(patcher, 1.15, 0.5, width, height)
    return shifted.get_model_object("model_sampling").sigmas


@pytest.mark.parametrize("width, height, policy, same_as", [
    (2048, 1024, "linear", (2048, 1024)),  # ComfyUI's line, extrapolated
    (4096, 4096, "linear", (4096, 4096)),
    (4096, 2048, "pinned", (1024, 1024)),  # above the base resolution: the base resolution's shift
    (512, 768, "pinned", (512, 768)),  # below it: the line
])
def test_noise_shift_follows_comfyuis_own_line(node_cls, flux, width, height, policy, same_as):
    patched = node_cls.execute(model=flux.patcher, method="yarn", base_resolution=1024, dynamic=True,
                               width=width, height=height, shift=policy).args[0]
    expected = flux_node_sigmas(flux.comfy, flux.patcher, *same_as)
    torch.testing.assert_close(patched.get_model_object("model_sampling").sigmas, expected, rtol=1e-6, atol=0)
    assert "model_sampling" not in flux.patcher.object_patches


def test_noise_shift_refused_for_models_without_flux_shift(node_cls, comfy):
    from dype_rope.adapters.comfyui.node import NodeInputError

    wan = Tiny(comfy, "wan21") if "wan21" in tiny_comfy.FAMILIES and tiny_comfy.FAMILIES["wan21"].adapter else None
    if wan is None:
        pytest.fail("the Wan 2.1 row is needed for this check")
    with pytest.raises(NodeInputError, match="leave width and height at 0"):
        node_cls.execute(model=wan.patcher, method="yarn", base_resolution=0, dynamic=True, width=1024, height=1024)


def test_rope_options_stretch_the_extent_dype_sees(flux):
    """rope_options scale the image ids: (n - 1) * scale + 1 positions. DyPE rescales by that extent, so a
    user's own position interpolation is respected and DyPE only covers what still exceeds the base grid."""
    rows, cols, scale = 16, 12, 0.75
    patcher = flux.dype.clone()
    patcher.model_options.setdefault("transformer_options", {})["rope_options"] = {"scale_x": scale, "scale_y": scale}
    _, calls = flux.record(patcher, rows, cols)
    emb = flux.embedders(patcher)[0]
    axes_dims = [int(d) for d in emb.axes_dim]
    extents = ((rows - 1) * scale + 1, (cols - 1) * scale + 1)
    scales = [1.0, extents[0] / BASE[0], extents[1] / BASE[1]]
    stretched = torch.cat([torch.full((d // 2,), a > 0) for a, d in enumerate(axes_dims)])
    for call in calls:
        for ids, table in call["tables"]:
            assert ids[0, -1, 1] == (rows - 1) * scale  # ComfyUI really stretched the ids
            expected = reference_rotations(ids[0], axes_dims, float(emb.theta), scales, float(call["sigma"][0]),
                                           (1.0, *BASE))
            torch.testing.assert_close(table[0, 0][..., stretched, :, :], expected[..., stretched, :, :].float(),
                                       rtol=1e-5, atol=2e-6)


def test_example_workflow_is_a_valid_comfyui_graph(node_cls, comfy):
    """docs/workflows/*.json (API format): every node exists in ComfyUI, every input is one it declares, and
    every link comes from an output of the declared type."""
    import json

    import nodes

    extras = Path(nodes.__file__).resolve().parent / "comfy_extras"
    for name in ("nodes_flux.py", "nodes_sd3.py"):
        assert asyncio.run(nodes.load_custom_node(str(extras / name), module_parent="comfy_extras"))
    for path in sorted((ROOT / "docs" / "workflows").glob("*.json")):
        graph = json.loads(path.read_text())
        assert any(node["class_type"] in ("DyPE", "DyPE_Compat") for node in graph.values()), path.name
        for node_id, node in graph.items():
            cls = nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
            declared = {k: v for section in cls.INPUT_TYPES().values() for k, v in section.items()}
            for name, value in node["inputs"].items():
                assert name in declared, f"{path.name} node {node_id}: {node['class_type']} has no input {name!r}"
                if isinstance(value, list):  # a link [source node, output index]
                    source = nodes.NODE_CLASS_MAPPINGS[graph[value[0]]["class_type"]]
                    assert source.RETURN_TYPES[value[1]] == declared[name][0], f"{path.name} node {node_id}.{name}"
                elif isinstance(declared[name][0], list) and node["class_type"] in ("DyPE", "DyPE_Compat", "KSampler"):
                    # a combo of fixed options (loaders list the model files on disk: none here)
                    assert value in declared[name][0], f"{path.name} node {node_id}.{name} = {value!r}"


def test_comfyuis_config_parser_reads_the_registry_metadata(comfy):
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(ROOT))
    assert config.project.name == "dype-rope"
    assert config.tool_comfy.display_name and config.tool_comfy.publisher_id


def test_a_model_not_sampled_as_flow_matching_is_refused(node_cls, flux):
    from comfy.model_sampling import EPS, ModelSamplingDiscrete

    from dype_rope.adapters.comfyui.node import NodeInputError

    class Eps(ModelSamplingDiscrete, EPS):
        pass

    other = flux.patcher.clone()
    other.add_object_patch("model_sampling", Eps(other.model.model_config))
    with pytest.raises(NodeInputError, match="needs a flow-matching model_sampling"):
        node_cls.execute(model=other, method="yarn", base_resolution=0, dynamic=True)


def test_lora_weight_patches_keep_working_under_dype(flux):
    """A LoRA-style weight patch (ComfyUI's "diff" patch) applied before or after the DyPE node: at the base grid
    the result is the LoRA model's, bit for bit; above it DyPE still acts on the LoRA model."""
    from dype_rope.adapters.comfyui.node import dype_model

    model = flux.patcher.get_model_object("diffusion_model")
    key = "diffusion_model.img_in.weight"
    diff = torch.randn(model.img_in.weight.shape, generator=torch.Generator().manual_seed(7)) * 0.05
    lora = flux.patcher.clone()
    assert lora.add_patches({key: (diff,)}, 1.0) == [key]
    before_node = dype_model(lora, base_resolution=BASE[0] * 16)  # LoRA, then DyPE
    after_node = flux.dype.clone()  # DyPE, then LoRA
    after_node.add_patches({key: (diff,)}, 1.0)
    stock = flux.sample(flux.patcher, *BASE)
    with_lora = flux.sample(lora, *BASE)
    assert not torch.equal(with_lora, stock)  # the patch really changes the model
    assert torch.equal(flux.sample(before_node, *BASE), with_lora)
    assert torch.equal(flux.sample(after_node, *BASE), with_lora)
    large = flux.sample(before_node, 16, 12)
    assert not torch.equal(large, flux.sample(lora, 16, 12))
    assert torch.equal(flux.sample(after_node, 16, 12), large)
    assert torch.equal(flux.sample(flux.patcher, *BASE), stock)  # and the shared model is unpatched again


# -- the noise shift at a model's native resolution, and ComfyUI's base_shift / max_shift line ------------------

def test_pinned_shift_at_the_native_resolution_is_the_models_own(node_cls, comfy):
    """Qwen-Image samples with mu = 1.15 at its native 1328 px (83 x 83 tokens): "pinned" keeps it there and above
    (FLUX's 4096-token line would give 1.62), and below it follows the line from (256 tokens, 0.5) to (6889, 1.15)."""
    from comfy.model_sampling import flux_time_shift

    qwen = Tiny(comfy, "qwen_image")
    stock = qwen.patcher.get_model_object("model_sampling")
    assert stock.shift == 1.15
    for px in (1328, 2656):
        patched = node_cls.execute(model=qwen.patcher, method="yarn", base_resolution=0, dynamic=True, width=px,
                                   height=px, shift="pinned").args[0]
        assert torch.equal(patched.get_model_object("model_sampling").sigmas, stock.sigmas)
    patched = node_cls.execute(model=qwen.patcher, method="yarn", base_resolution=0, dynamic=True, width=1024,
                               height=1024, shift="pinned").args[0]
    mu = 0.5 + (1.15 - 0.5) * (4096 - 256) / (6889 - 256)  # 0.8763...
    expected = flux_time_shift(mu, 1.0, torch.arange(1, 10001) / 10000)
    torch.testing.assert_close(patched.get_model_object("model_sampling").sigmas, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("base_shift, max_shift, width, height", [(0.5, 1.15, 2048, 1536), (0.3, 1.5, 3072, 1024)])
def test_linear_shift_takes_comfyuis_base_and_max_shift(node_cls, flux, base_shift, max_shift, width, height):
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux

    patched = node_cls.execute(model=flux.patcher, method="vision_yarn", base_resolution=1024, dynamic=True,
                               width=width, height=height, shift="linear", base_shift=base_shift,
                               max_shift=max_shift).args[0]
    (expected,) = ModelSamplingFlux().patch(flux.patcher, max_shift, base_shift, width, height)
    torch.testing.assert_close(patched.get_model_object("model_sampling").sigmas,
                               expected.get_model_object("model_sampling").sigmas, rtol=1e-6, atol=0)


# -- workflows that leave the advanced inputs out --------------------------------------------------------------

class ModelSourceForTest:
    """A MODEL without a checkpoint file, so that a graph around the DyPE node can be validated."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "run"
    CATEGORY = "testing"


class ModelSinkForTest:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing"


def validate(prompt: dict, monkeypatch) -> tuple[bool, dict]:
    """ComfyUI's own validation (execution.validate_prompt) of an API-format prompt."""
    import execution
    import nodes

    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "ModelSourceForTest", ModelSourceForTest)
    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "ModelSinkForTest", ModelSinkForTest)
    graph = {"1": {"class_type": "ModelSourceForTest", "inputs": {}},
             "3": {"class_type": "ModelSinkForTest", "inputs": {"model": ["2", 0]}}} | prompt
    valid, error, _, node_errors = asyncio.run(execution.validate_prompt("test", graph, None))
    return valid, {"error": error, "node_errors": node_errors}


def test_a_workflow_without_the_advanced_inputs_validates(node_cls, monkeypatch):
    dype = {"class_type": "DyPE", "inputs": {"model": ["1", 0], "method": "vision_yarn", "base_resolution": 0,
                                             "dynamic": True}}
    valid, report = validate({"2": dype}, monkeypatch)
    assert valid, report
    # ... and ComfyUI's validation is really looking: without a required input it refuses the graph
    del dype["inputs"]["method"]
    valid, report = validate({"2": dype}, monkeypatch)
    assert not valid and "Required input is missing" in str(report)


def test_left_out_inputs_get_the_defaults(node_cls, flux):
    """What ComfyUI calls for a workflow that left the advanced inputs out (execute with the required ones only)
    samples what the node's defaults sample."""
    bare = node_cls.execute(model=flux.patcher, method="yarn", base_resolution=BASE[0] * 16, dynamic=True).args[0]
    full = node_cls.execute(model=flux.patcher, method="yarn", base_resolution=BASE[0] * 16, dynamic=True,
                            lambda_s=0.0, lambda_t=-1.0, aspect="per-axis", yarn_modulation="default", width=0,
                            height=0, shift="pinned", mscale="log", start_sigma=1.0, base_shift=0.5,
                            max_shift=1.15).args[0]
    assert torch.equal(flux.sample(bare, 16, 12), flux.sample(full, 16, 12))
    assert "model_sampling" not in bare.object_patches  # width = height = 0: ComfyUI's shift is left alone
