"""Sequence sharding (diffusers context parallelism, xDiT): every shard's RoPE tables are the matching slice
of the unsharded ones, because the per-axis scale comes from the global grid, never from a shard.

The split is simulated in one process with diffusers' own ContextParallelSplitHook, installed where the
model's `_cp_plan` says, exactly as `enable_parallelism` installs it; only the rank of the collective is
replaced by a chosen shard index, and shards may be uneven (diffusers' `ulysses_anything`). Where the plan
gathers the output (`proj_out`) the forward stops: one process cannot gather, and the tables, which is what
DyPE changes, have been recorded by then. tests/test_context_parallel.py runs the real thing over gloo.
"""

from __future__ import annotations

import pytest
import torch
from diffusers.hooks.context_parallel import ContextParallelSplitHook
from diffusers.hooks.hooks import HookRegistry, ModelHook
from diffusers.models._modeling_parallel import ContextParallelOutput
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import dype_rope
from dype_rope import apply_rope
from families.flux import flux_img_ids, flux_inputs, tiny_flux
from families.row import interleaved
from families.qwen_image import qwen_inputs, tiny_qwen_image
from families.video import WAN, tiny_wan
from reference_dype import rope_pairs

SHARDS = st.integers(2, 4)


@pytest.fixture(scope="module")
def flux():
    return tiny_flux()


@pytest.fixture(scope="module")
def wan():
    return tiny_wan()


@pytest.fixture(scope="module")
def qwen():
    return tiny_qwen_image()


class ShardSplit(ContextParallelSplitHook):
    """diffusers' split hook with the rank of the collective replaced by `index` of `shards` (uneven allowed)."""

    def __init__(self, metadata, shards: int, index: int) -> None:
        super().__init__(metadata, parallel_config=None)
        self.shards, self.index = shards, index

    def _prepare_cp_input(self, x, cp_input):
        if cp_input.expected_dims is not None and x.dim() != cp_input.expected_dims:
            return x  # diffusers leaves such inputs whole as well
        return x.tensor_split(self.shards, dim=cp_input.split_dim)[self.index]


class ReachedGather(Exception):
    pass


class StopAtGather(ModelHook):
    def pre_forward(self, module, *args, **kwargs):
        raise ReachedGather


def modules_named(model: nn.Module, name: str) -> list[nn.Module]:
    """The module(s) a _cp_plan key names: "" is the model, "blocks.*" every block."""
    found = [model]
    for atom in name.split(".") if name else []:
        found = [c for m in found for c in (list(m) if atom == "*" else [getattr(m, atom)])]
    return found


class SimulatedShard:
    """Install the model's _cp_plan as shard `index` of `shards` would see it; `remove()` takes it off the
    modules the plan names at that time, as diffusers' remove_context_parallel does."""

    def __init__(self, model: nn.Module, shards: int, index: int) -> None:
        self.model = model
        for name, plan in model._cp_plan.items():
            for m in modules_named(model, name):
                if isinstance(plan, dict):
                    hook, key = ShardSplit(plan, shards, index), f"cp_input---{name}"
                else:
                    outputs = [plan] if isinstance(plan, ContextParallelOutput) else plan
                    assert all(isinstance(p, ContextParallelOutput) for p in outputs)
                    hook, key = StopAtGather(), f"cp_output---{name}"
                HookRegistry.check_if_exists_or_initialize(m).register_hook(hook, key)

    def remove(self) -> None:
        for name, plan in self.model._cp_plan.items():
            key = f"cp_input---{name}" if isinstance(plan, dict) else f"cp_output---{name}"
            for m in modules_named(self.model, name):
                m._diffusers_hook.remove_hook(key, recurse=False)


def tables_seen(model: nn.Module, rope_name: str, inputs: dict, shards: int | None = None, index: int = 0):
    """The RoPE module's output in one call of `model`, under a simulated shard if `shards` is given.

    The recording hook sits outside diffusers' forward wrapper, so it sees what the blocks receive.
    """
    seen = []
    sim = SimulatedShard(model, shards, index) if shards else None
    h = getattr(model, rope_name).register_forward_hook(lambda mod, args, out: seen.append(out))
    try:
        with torch.no_grad():
            model(**inputs)
    except ReachedGather:
        pass
    finally:
        h.remove()
        if sim:
            sim.remove()
    assert len(seen) == 1
    return seen[0]


def rotated(q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return apply_rope(q, cos.reshape(-1, cos.shape[-1]), sin.reshape(-1, sin.shape[-1]))


# -- FLUX: img_ids and txt_ids are split before the model's forward, pos_embed runs on the shard --------------

@settings(max_examples=10)
@given(shards=SHARDS, h=st.integers(2, 9), w=st.integers(2, 9), text_len=st.integers(4, 6),
       base=st.tuples(st.integers(2, 6), st.integers(2, 6)), t=st.floats(0.0, 1.0))
def test_flux_shards_see_slices_of_the_global_tables(flux, shards, h, w, text_len, base, t):
    x = dict(flux_inputs(h, w, t=t, text_len=text_len), return_dict=False)
    q = torch.randn(1, text_len + h * w, 2, 16, generator=torch.Generator().manual_seed(h * w))
    with dype_rope.patch(flux, base_grid=base):
        cos, sin = tables_seen(flux, "pos_embed", x)
        # the global tables: the schedule at the whole image's scale (tests/reference_dype.py)
        positions = torch.cat([torch.zeros(text_len, 3), flux_img_ids(h, w)])
        want = torch.stack(rope_pairs(positions, (4, 6, 6), 10000.0, [1.0, h / base[0], w / base[1]], t,
                                      (1.0, *base)), -1)
        torch.testing.assert_close(interleaved(cos, sin), want, rtol=0, atol=2e-7)
        txt_rows, img_rows = torch.arange(text_len), torch.arange(text_len, text_len + h * w)
        q_global = rotated(q, cos, sin)
        for k in range(shards):
            rows = torch.cat([txt_rows.tensor_split(shards)[k], img_rows.tensor_split(shards)[k]])
            cos_k, sin_k = tables_seen(flux, "pos_embed", x, shards, k)
            assert cos_k.shape[0] == len(rows) < cos.shape[0]  # the split really happened
            assert torch.equal(cos_k, cos[rows]) and torch.equal(sin_k, sin[rows])
            assert torch.equal(rotated(q[:, rows], cos_k, sin_k), q_global[:, rows])


def test_flux_patched_after_parallelism_still_reads_the_full_ids(flux):
    """enable_parallelism first: the pre-hook still runs before diffusers' wrapper of `forward`, and reads
    the arguments through it by name and by position."""
    x = dict(flux_inputs(6, 8, t=0.4), return_dict=False)
    with dype_rope.patch(flux, base_grid=(3, 4)):
        cos, _ = tables_seen(flux, "pos_embed", x)
    sim = SimulatedShard(flux, 2, 1)
    try:
        with dype_rope.patch(flux, base_grid=(3, 4)):
            by_name = tables_seen(flux, "pos_embed", x)[0]
            order = ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"]
            seen = []
            h = flux.pos_embed.register_forward_hook(lambda mod, args, out: seen.append(out[0]))
            with torch.no_grad(), pytest.raises(ReachedGather):
                flux(*[x[k] for k in order], return_dict=False)
            h.remove()
    finally:
        sim.remove()
    rows = torch.cat([torch.arange(5).tensor_split(2)[1], torch.arange(5, 53).tensor_split(2)[1]])
    assert torch.equal(by_name, cos[rows]) and torch.equal(seen[0], cos[rows])


def test_a_scale_taken_from_the_shard_would_differ(flux):
    """The control that makes the property above meaningful: the first shard of an 8 x 6 image spans 4 rows, and
    tables built from its own extent differ from the global ones on the same tokens."""
    with dype_rope.patch(flux, base_grid=(3, 3)):
        whole, _ = tables_seen(flux, "pos_embed", dict(flux_inputs(8, 6, t=0.7), return_dict=False))
        half, _ = tables_seen(flux, "pos_embed", dict(flux_inputs(4, 6, t=0.7), return_dict=False))
    assert not torch.equal(half, whole[: len(half)])


@settings(max_examples=8)
@given(shards=SHARDS, h=st.integers(2, 9), w=st.integers(2, 9), t=st.floats(0.0, 1.0))
def test_flux_zero_padding_to_a_multiple_of_the_degree_keeps_the_scale(flux, shards, h, w, t):
    """xDiT pads the token sequence with zeros up to a multiple of the degree: padded ids sit at (0, 0, 0)."""
    x = dict(flux_inputs(h, w, t=t), return_dict=False)
    pad = -(h * w) % shards or shards  # always pad something
    padded = dict(x, img_ids=torch.cat([x["img_ids"], torch.zeros(pad, 3)]),
                  hidden_states=torch.cat([x["hidden_states"], torch.zeros(1, pad, x["hidden_states"].shape[-1])], 1))
    with dype_rope.patch(flux, base_grid=(3, 3)):
        cos, sin = tables_seen(flux, "pos_embed", x)
        cos_p, sin_p = tables_seen(flux, "pos_embed", padded)
    real = x["txt_ids"].shape[0] + h * w
    assert torch.equal(cos_p[:real], cos) and torch.equal(sin_p[:real], sin)


# -- Wan: the rope runs on the whole latent, its output is split (its "rope" entry in _cp_plan) ---------------

@settings(max_examples=10)
@given(shards=SHARDS, frames=st.integers(1, 3), rows=st.integers(2, 7), cols=st.integers(2, 7),
       base=st.tuples(st.integers(2, 5), st.integers(2, 5)), timestep=st.integers(0, 999))
def test_wan_shards_see_slices_of_the_global_tables(wan, shards, frames, rows, cols, base, timestep):
    x = WAN.inputs((frames, rows, cols), timestep / 1000)
    n = frames * rows * cols
    q = torch.randn(1, n, 2, 18, generator=torch.Generator().manual_seed(n))
    with dype_rope.patch(wan, base_grid=base):
        cos, sin = tables_seen(wan, "rope", x)
        q_global = rotated(q, cos, sin)
        for k in range(shards):
            cos_k, sin_k = tables_seen(wan, "rope", x, shards, k)
            rows_k = torch.arange(n).tensor_split(shards)[k]
            assert cos_k.shape[1] == len(rows_k) < n
            assert torch.equal(cos_k, cos[:, rows_k]) and torch.equal(sin_k, sin[:, rows_k])
            assert torch.equal(rotated(q[:, rows_k], cos_k, sin_k), q_global[:, rows_k])


@pytest.mark.parametrize("order", ["patch, then parallelism", "parallelism, then patch"])
def test_wan_rope_is_sharded_whichever_comes_first_and_after_remove(wan, order):
    x = WAN.inputs((2, 4, 6), 0.7)
    with dype_rope.patch(wan, base_grid=(2, 3)):
        cos, _ = tables_seen(wan, "rope", x)
    stock_cos, _ = tables_seen(wan, "rope", x)
    stock = wan.rope
    if order == "patch, then parallelism":
        handle = dype_rope.patch(wan, base_grid=(2, 3))
        sim = SimulatedShard(wan, 2, 1)
    else:
        sim = SimulatedShard(wan, 2, 1)
        handle = dype_rope.patch(wan, base_grid=(2, 3))
    try:
        assert torch.equal(tables_seen(wan, "rope", x)[0], cos.tensor_split(2, dim=1)[1])
        handle.remove()
        assert wan.rope is stock
        assert torch.equal(tables_seen(wan, "rope", x)[0], stock_cos.tensor_split(2, dim=1)[1])  # still sharded
    finally:
        handle.remove()
        sim.remove()
    assert not stock._diffusers_hook.hooks  # nothing left behind once parallelism is off


# -- Qwen-Image: pos_embed runs on img_shapes (global), both outputs are split ---------------------------------

@settings(max_examples=8)
@given(shards=SHARDS, h=st.integers(2, 7), w=st.integers(2, 7), text_len=st.integers(4, 6), t=st.floats(0.0, 1.0))
def test_qwen_image_shards_see_slices_of_the_global_tables(qwen, shards, h, w, text_len, t):
    x = dict(qwen_inputs((h, w), text_len=text_len), timestep=torch.tensor([t]), return_dict=False)
    with dype_rope.patch(qwen, base_grid=(2, 2)):
        img, txt = tables_seen(qwen, "pos_embed", x)
        for k in range(shards):
            img_k, txt_k = tables_seen(qwen, "pos_embed", x, shards, k)
            assert img_k.shape[0] < img.shape[0]
            assert torch.equal(img_k, img.tensor_split(shards)[k]) and torch.equal(txt_k, txt.tensor_split(shards)[k])
