"""What only the generic EmbedND adapter has: found by name or pointed at with patch(model, module=...), its time
argument and direction configurable by subclassing, modules of another output format refused. The shared contract:
tests/test_contract.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dype_rope
from dype_rope.adapters.embednd import EmbedNDAdapter
from families.embednd import EMBEDND, EmbedND, TinyEmbedNDDiT, tiny_embednd
from families.row import encoding_calls


def test_the_replacement_keeps_the_attributes():
    model = tiny_embednd()
    with dype_rope.patch(model):
        assert model.pe_embedder.theta == 10000.0 and model.pe_embedder.axes_dim == [8, 12, 12]
        assert model.pe_embedder.dim == 32


def test_any_module_pointed_at():
    class Rope(EmbedND):  # another name: not found by itself, fine when pointed at
        pass

    model = tiny_embednd()
    model.pe_embedder = Rope(32, 10000.0, [8, 12, 12])
    with pytest.raises(TypeError, match="no adapter"):
        dype_rope.patch(model)
    small, big = EMBEDND.inputs((4, 6), 0.5), EMBEDND.inputs((8, 12), 0.5)
    ref, ref_big = EMBEDND.run(model, small), EMBEDND.run(model, big)
    with dype_rope.patch(model, module=model.pe_embedder, base_grid=EMBEDND.base) as handle:
        assert handle.adapter.name == "embednd"
        assert torch.equal(EMBEDND.run(model, small), ref)
        assert not torch.equal(EMBEDND.run(model, big), ref_big)


def test_time_argument_and_direction_are_configurable():
    class Reversed(TinyEmbedNDDiT):
        def forward(self, img, img_ids, txt, txt_ids, tau):  # tau: 0 = noise, 1000 = data
            return super().forward(img, img_ids, txt, txt_ids, 1 - tau / 1000)

    model = Reversed().eval()
    grid = (8, 9)
    inputs = EMBEDND.inputs(grid, 0.75)
    inputs["tau"] = torch.full((1,), 250.0)
    del inputs["timesteps"]
    with pytest.raises(TypeError, match="timestep arguments"):
        dype_rope.patch(model)

    @dype_rope.register_adapter(Reversed)
    class ReversedAdapter(EmbedNDAdapter):
        time_arguments = ("tau",)
        time_divide_by = 1000.0
        time_reversed = True

    with dype_rope.patch(model, base_grid=EMBEDND.base):
        calls = encoding_calls(model, "pe_embedder", lambda: model(**inputs))
    want = EMBEDND.layout.expected(calls, grid, EMBEDND.base, 0.75, "per-axis", None)  # tau 250 is t = 0.75
    torch.testing.assert_close(EMBEDND.layout.seen(calls)[0], want[0], rtol=0, atol=EMBEDND.layout.tol)


def test_modules_of_another_format_are_refused_clearly():
    class CosSin(nn.Module):
        theta, axes_dim = 10000.0, [8, 12, 12]

        def forward(self, ids):
            return ids.cos(), ids.sin()

    model = tiny_embednd()
    model.pe_embedder = CosSin()
    with pytest.raises(TypeError, match="rotation matrices.*register an adapter"):
        dype_rope.patch(model, module=model.pe_embedder)
    assert isinstance(model.pe_embedder, CosSin) and not dype_rope.is_patched(model)
