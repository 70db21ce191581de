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


# -- one plan per embedding when the forward takes no image ids, the probe's tolerance, mixed-time batches ------

from reference_dype import rope_pairs  # noqa: E402
from families.tiny import grid_ids  # noqa: E402


class TwoGrids(nn.Module):
    """forward(x, first, second, timesteps): embeds two position grids of different sizes in two calls and takes
    no image-ids argument, so each embedding must be planned from its own ids."""

    def __init__(self) -> None:
        super().__init__()
        self.pe_embedder = EmbedND(32, 10000.0, [8, 12, 12])
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x, first, second, timesteps):
        return self.pe_embedder(first).sum() * self.scale, self.pe_embedder(second).sum() * self.scale


def test_without_image_ids_each_embedding_gets_its_own_plan():
    model, base, t = TwoGrids(), (4, 6), 0.75
    grids = [(8, 9), (12, 5)]  # different ratios on both axes: a plan reused from the first call would show
    first, second = (grid_ids(*g).float().unsqueeze(0) for g in grids)
    with dype_rope.patch(model, base_grid=base):
        calls = encoding_calls(model, "pe_embedder", lambda: model(None, first, second, torch.tensor([t])))
    assert len(calls) == 2
    for (args, out), grid in zip(calls, grids):
        scales = [1.0, grid[0] / base[0], grid[1] / base[1]]
        cos, sin = rope_pairs(args[0][0].double(), (8, 12, 12), 10000.0, scales, t, [1.0, *base])
        torch.testing.assert_close(out[0, 0, :, :, 0, 0].double(), cos, rtol=0, atol=2e-7)
        torch.testing.assert_close(out[0, 0, :, :, 1, 0].double(), sin, rtol=0, atol=2e-7)


def test_a_module_whose_theta_is_five_percent_off_its_declared_one_is_refused():
    class Off(EmbedND):  # declares theta 10000, turns at 10500
        def forward(self, ids):
            declared, self.theta = self.theta, self.theta * 1.05
            try:
                return super().forward(ids)
            finally:
                self.theta = declared

    model = tiny_embednd()
    model.pe_embedder = Off(32, 10000.0, [8, 12, 12])
    with pytest.raises(TypeError, match="does not return rotation matrices.*theta=10000.0"):
        dype_rope.patch(model, module=model.pe_embedder)
    assert not dype_rope.is_patched(model)


def test_mixed_times_above_the_base_grid_get_one_plan_per_sample():
    """Each sample of a batch turns at its own time: its tables are bit for bit those of the sample run alone,
    and its output matches (to the rounding of batched matrix products)."""
    model, grid, times = tiny_embednd(), (8, 9), (0.8, 0.3)
    one = EMBEDND.inputs(grid, 1.0)
    batch = {k: torch.cat([v, v]) for k, v in one.items()}
    batch["timesteps"] = torch.tensor(times)
    with dype_rope.patch(model, base_grid=EMBEDND.base):
        calls = encoding_calls(model, "pe_embedder", lambda: EMBEDND.run(model, batch))
        out = EMBEDND.run(model, batch)
        alone = []
        for t in times:
            x = {**one, "timesteps": torch.tensor([t])}
            alone.append((encoding_calls(model, "pe_embedder", lambda: EMBEDND.run(model, x)), EMBEDND.run(model, x)))
    tables = calls[0][1]
    assert not torch.equal(alone[0][0][0][1], alone[1][0][0][1])  # the two times do differ
    for i, (alone_calls, alone_out) in enumerate(alone):
        assert torch.equal(tables[i : i + 1], alone_calls[0][1])
        torch.testing.assert_close(out[i], alone_out[0], rtol=1e-5, atol=1e-6)


def test_mixed_times_compile_into_one_graph_without_reading_the_times():
    from torch._dynamo.testing import CompileCounter

    model, grid = tiny_embednd(), (8, 9)
    one = EMBEDND.inputs(grid, 1.0)
    batch = {k: torch.cat([v, v]) for k, v in one.items()}
    torch._dynamo.reset()
    counter = CompileCounter()
    with dype_rope.patch(model, base_grid=EMBEDND.base):
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for times in ((0.8, 0.3), (0.6, 0.6), (0.2, 0.9)):
            batch["timesteps"] = torch.tensor(times)
            with torch.no_grad():
                got = compiled(**batch)
            torch.testing.assert_close(got, EMBEDND.run(model, batch), rtol=1e-6, atol=1e-6)
    torch._dynamo.reset()
    assert counter.frame_count == 1
