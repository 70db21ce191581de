"""One contract, every ComfyUI family: tiny random-weight models built by `comfy.supported_models`, sampled by
`comfy.sample.sample` through the DyPE node, against ComfyUI's own code.

Each row of tiny_comfy.FAMILIES that dype_rope supports is checked for:
- at or below the base grid the sampled latent is bit-identical to stock;
- above it, at every step, the tables the model used equal DyPE's at that step's sigma (a float64 reference
  from the paper's formulas), the sigmas are ComfyUI's own schedule, and unstretched pairs are stock;
- reference images (every method ComfyUI has) leave the tables of the image as without them;
- the input ModelPatcher still samples the stock result after the DyPE branch ran;
- torch.compile of the diffusion model stays as many graphs as stock;
- `dype_rope.patch(diffusion_model)` works too and `remove()` restores it.
"""

from __future__ import annotations

import pytest
import torch

import dype_rope
import method_tables
import tiny_comfy
from dype_rope.adapters.comfyui import ADAPTERS, comfy_adapter_class
from reference_dype import rope_pairs

# how each embedder arranges its (cos, sin) pairs [..., D/2] into its tables [..., D/2, 2, 2], restated from
# ComfyUI's code: EmbedND (comfy/ldm/flux/layers.py) and ErnieImageEmbedND3 (comfy/ldm/ernie/model.py)


def _pairs(cos, sin):
    return torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))


def _ernie(cos, sin):
    half = cos.shape[-1] // 2
    top_c, top_s = cos[..., :half].repeat_interleave(2, dim=-1), sin[..., :half].repeat_interleave(2, dim=-1)
    bot_c, bot_s = cos[..., half:].repeat_interleave(2, dim=-1), sin[..., half:].repeat_interleave(2, dim=-1)
    return torch.stack([top_c, -top_s, bot_s, bot_c], dim=-1).unflatten(-1, (2, 2))


LAYOUTS = {"pairs": _pairs, "ernie": _ernie}

BASE = (8, 8)  # tokens; the node takes pixels: BASE * pixels per token
STEPS = 3
SUPPORTED = [name for name, row in tiny_comfy.FAMILIES.items() if row.adapter in ADAPTERS and not row.refs]
WITH_REFS = [name for name, row in tiny_comfy.FAMILIES.items() if row.adapter in ADAPTERS and row.refs]


class Tiny:
    """One family's tiny model, its conditioning and a DyPE clone made by the node's function."""

    def __init__(self, comfy, name: str, refs=None, ref_method=None, **settings):
        from dype_rope.adapters.comfyui.node import dype_model

        self.comfy, self.name, self.row = comfy, name, tiny_comfy.FAMILIES[name]
        self.patcher, self.positive, self.negative = tiny_comfy.build(name, 0, refs, ref_method)
        self.adapter = comfy_adapter_class(self.patcher.get_model_object("diffusion_model"))
        self.ppt = self.row.pixels_per_token
        self.dype = dype_model(self.patcher, base_resolution=BASE[0] * self.ppt, **settings)

    def sample(self, patcher, rows, cols, cfg=2.0, positive=None):
        lat = tiny_comfy.latent(self.name, rows, cols)
        return tiny_comfy.sample(self.comfy, self.name, patcher, positive or self.positive, self.negative, lat,
                                 steps=STEPS, cfg=cfg)

    def embedders(self, patcher):
        return [patcher.object_patches[f"diffusion_model.{p}"] for p in self.adapter.family.embedders]

    def record(self, patcher, rows, cols, cfg=2.0):
        """Sample, recording every model call's sigma and every embedder call's (ids, output)."""
        calls = []
        model = patcher.get_model_object("diffusion_model")

        def pre(module, args, kwargs):
            calls.append({"sigma": kwargs["transformer_options"]["sigmas"].clone(), "tables": [], "kwargs": [],
                          "args": []})

        def post(module, args, kwargs, out):  # returns None: the output stays the module's
            calls[-1]["tables"].append((args[0], out))
            calls[-1]["kwargs"].append(kwargs)
            calls[-1]["args"].append(args)

        hooks = [model.register_forward_pre_hook(pre, with_kwargs=True)]
        wrapped = {}
        for path in self.adapter.family.embedders:
            key = f"diffusion_model.{path}"
            emb = patcher.object_patches[key]
            if isinstance(emb, torch.nn.Module):
                hooks.append(emb.register_forward_hook(post, with_kwargs=True))
            else:  # a replaced method (JoyImage): record around it for this sampling only

                def recording(*args, _emb=emb, **kwargs):
                    out = _emb(*args, **kwargs)
                    post(None, args, kwargs, out)
                    return out

                wrapped[key] = emb
                patcher.object_patches[key] = recording
        try:
            out = self.sample(patcher, rows, cols)
        finally:
            for h in hooks:
                h.remove()
            patcher.object_patches.update(wrapped)
        return out, calls


@pytest.fixture(params=SUPPORTED)
def tiny(request, comfy):
    return Tiny(comfy, request.param)


@pytest.mark.parametrize("rows, cols", [BASE, (8, 5), (3, 8)])
def test_bit_identical_at_or_below_the_base_grid(tiny, rows, cols):
    stock = tiny.sample(tiny.patcher, rows, cols)
    assert torch.equal(tiny.sample(tiny.dype, rows, cols), stock)


def test_tables_follow_dype_at_every_step(tiny):
    rows, cols = 16, 12  # 2 x 1.5 the base grid
    out, calls = tiny.record(tiny.dype, rows, cols)
    assert torch.isfinite(out).all()
    sigmas = tiny.comfy.samplers.calculate_sigmas(tiny.patcher.get_model_object("model_sampling"), "simple", STEPS)
    assert [float(c["sigma"][0]) for c in calls] == [float(s) for s in sigmas[:-1]]
    if tiny.row.tables:  # a model method's own table layout (LTX, CogVideoX): its reference check
        return method_tables.CHECKS[tiny.row.tables](tiny, calls, rows, cols, BASE)
    fam = tiny.adapter.family
    emb = tiny.embedders(tiny.dype)[0]
    axes_dims, theta = tiny.row.rope(emb)
    scales, base_lens = [1.0] * len(axes_dims), [1.0] * len(axes_dims)
    (r_axis, c_axis) = fam.id_axes
    # extents in id units: the model divides its ids by id_scale (Kandinsky 5), (n - 1) / c + 1
    (cr, cc) = tiny.row.id_scale
    extent = [(rows - 1) / cr + 1, (cols - 1) / cc + 1]
    base = [(BASE[0] - 1) / cr + 1, (BASE[1] - 1) / cc + 1]
    scales[r_axis], scales[c_axis] = extent[0] / base[0], extent[1] / base[1]
    base_lens[r_axis], base_lens[c_axis] = base
    stretched = torch.cat([torch.full((d // 2,), float(a in fam.id_axes)) for a, d in enumerate(axes_dims)])
    layout = LAYOUTS[tiny.row.layout]
    moved = layout(stretched, stretched).abs() > 0  # the table entries that come from a rescaled pair
    sampling = tiny.patcher.get_model_object("model_sampling")
    for call in calls:
        assert call["tables"], "the model embedded no positions through the replaced module"
        # DyPE's t: the flow time; for Cosmos' rectified flow ComfyUI's own conversion (sigma / (sigma + 1))
        times = sampling.timestep(call["sigma"]) if tiny.row.time == "rflow" else call["sigma"]
        for (arg, table), kwargs in zip(call["tables"], call["kwargs"]):
            # [B, L, D/2, 2, 2]; a grid embedder's tables have no batch axis (one for the call)
            shared = tiny.row.grid or tiny.row.components
            table = table.reshape(1 if shared else table.shape[0], -1, *table.shape[-3:])
            stock = emb.original(arg, **kwargs)  # ids of batch 1 (Wan, Lumina2): the same stock for every sample
            stock = stock.reshape(1 if shared else stock.shape[0], *table.shape[1:]).expand_as(table)
            assert torch.equal(table[..., ~moved], stock[..., ~moved])
            if tiny.row.grid:
                ids = grid_ids(arg)
            elif tiny.row.components:
                ids = component_ids(arg)
            else:
                ids = arg.reshape(arg.shape[0], -1, arg.shape[-1])
            for b, t in enumerate(times.tolist()):
                cos, sin = rope_pairs(ids[min(b, ids.shape[0] - 1)], axes_dims, theta, scales, t, base_lens)
                torch.testing.assert_close(table[min(b, table.shape[0] - 1)][..., moved],
                                           layout(cos, sin)[..., moved].float(), rtol=1e-5, atol=2e-6)


def component_ids(sizes):
    """JoyImage's positions: per component (t, h, w) grid, rows and cols from 0, frames continuing: [1, L, 3]."""
    parts, t0 = [], 0
    for t, h, w in sizes:
        parts.append(torch.cartesian_prod(torch.arange(t0, t0 + t), torch.arange(h), torch.arange(w)))
        t0 += t
    return torch.cat(parts).unsqueeze(0)


def grid_ids(x):
    """(frame, row, col) of every token of an embedded latent [B, T, H, W, C], in (t h w) order: [1, L, 3]."""
    t, h, w = x.shape[1:4]
    return torch.cartesian_prod(torch.arange(t), torch.arange(h), torch.arange(w)).unsqueeze(0)


def test_input_patcher_still_samples_stock(tiny):
    before = tiny.sample(tiny.patcher, 16, 12)
    dyped = tiny.sample(tiny.dype, 16, 12)
    assert not torch.equal(dyped, before)
    assert torch.equal(tiny.sample(tiny.patcher, 16, 12), before)
    assert torch.equal(tiny.sample(tiny.dype, 16, 12), dyped)  # and the DyPE branch again, unchanged


def test_two_nodes_in_one_graph_keep_their_own_settings(tiny):
    from dype_rope.adapters.comfyui.node import dype_model

    other = dype_model(tiny.patcher, method="ntk", base_resolution=4 * tiny.ppt)
    a, b = tiny.sample(tiny.dype, 16, 12), tiny.sample(other, 16, 12)
    assert not torch.equal(a, b)
    assert torch.equal(tiny.sample(tiny.dype, 16, 12), a)
    # a DyPE node after another one replaces its settings: the result is the second node's alone
    chained = dype_model(tiny.dype, method="ntk", base_resolution=4 * tiny.ppt)
    assert torch.equal(tiny.sample(chained, 16, 12), b)


# every mechanism and table layout once, and every family that had the check before; a row that only reuses
# another row's mechanism with other numbers (compile_check=False) adds compile time, not coverage
COMPILED = [name for name in SUPPORTED if tiny_comfy.FAMILIES[name].compile_check]


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_model_keeps_stock_graph_count(comfy, name):
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from torch._dynamo.testing import CompileCounter

    tiny = Tiny(comfy, name)
    counts = []
    for patcher in (tiny.patcher, tiny.dype):
        torch._dynamo.reset()
        clone, counter = patcher.clone(), CompileCounter()
        set_torch_compile_wrapper(clone, backend=counter)
        eager = tiny.sample(patcher, 16, 12)
        compiled = tiny.sample(clone, 16, 12)
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
        counts.append(counter.frame_count)
    torch._dynamo.reset()
    assert counts[1] == counts[0], f"stock compiles to {counts[0]} graph(s), DyPE to {counts[1]}"


def test_patch_the_diffusion_model_directly(tiny):
    """Outside ComfyUI's patcher (a script holding the model): patch() on the diffusion model itself. A second
    model with the same weights, so that the node's object patches and the direct patch never meet."""
    direct = Tiny(tiny.comfy, tiny.name)
    model = direct.patcher.get_model_object("diffusion_model")
    stock_large = direct.sample(direct.patcher, 16, 12)
    handle = dype_rope.patch(model, base_grid=BASE)
    try:
        assert handle.adapter.name == ADAPTERS[tiny.row.adapter].name
        assert torch.equal(direct.sample(direct.patcher, *BASE), tiny.sample(tiny.patcher, *BASE))
        assert torch.equal(direct.sample(direct.patcher, 16, 12), tiny.sample(tiny.dype, 16, 12))
    finally:
        handle.remove()
    assert torch.equal(direct.sample(direct.patcher, 16, 12), stock_large)


REF_METHODS = (None, "offset", "index", "index_timestep_zero", "uxo")
# (family, method) pairs stock ComfyUI itself cannot sample: index_timestep_zero doubles the timestep batch
# but not the guidance batch of a guidance-distilled model (comfy/ldm/flux/model.py, forward_orig); the
# guidance-free FLUX.2 Klein row covers that method.
STOCK_CANNOT = {("flux_kontext", "index_timestep_zero"), ("flux2_edit", "index_timestep_zero")}


@pytest.mark.parametrize(
    "name, method", [(n, m) for n in WITH_REFS for m in REF_METHODS if (n, m) not in STOCK_CANNOT]
)
def test_reference_images_leave_the_image_tables_alone(comfy, name, method):
    with_refs = Tiny(comfy, name, ref_method=method)
    plain = Tiny(comfy, name, refs=())
    _, calls_refs = with_refs.record(with_refs.dype, 16, 12)
    _, calls_plain = plain.record(plain.dype, 16, 12)
    assert len(calls_refs) == len(calls_plain)
    for a, b in zip(calls_refs, calls_plain):
        for (ids_a, table_a), (ids_b, table_b) in zip(a["tables"], b["tables"]):
            n = ids_b.shape[-2]  # the call without references: caption and image tokens only
            assert torch.equal(ids_a[..., :n, :], ids_b)
            torch.testing.assert_close(table_a[..., :n, :, :, :], table_b, rtol=0, atol=0)
