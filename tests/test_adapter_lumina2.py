"""What only Lumina2 has: the base grid from the model's own sample_size, grids beyond the stock table length, and a
forward that breaks its own graph (caption lengths read on the host) while DyPE's part adds no break. The shared
contract: tests/test_contract.py."""

from __future__ import annotations

from pathlib import Path

import torch

import dype_rope
from families.lumina2 import LUMINA2, tiny_lumina2

LIBRARY = [str(Path(dype_rope.__file__).parent), str(Path(dype_rope.adapters.__file__).parent)]


def test_base_grid_from_sample_size():
    with dype_rope.patch(tiny_lumina2(sample_size=128)) as handle:
        assert handle.base_grid == (64, 64)  # Lumina-Image-2.0's 1024 px


def test_grids_beyond_the_stock_table_length():
    # axes_lens is 64: the stock embedding cannot index row 64; the DyPE tables are computed, not gathered.
    model = tiny_lumina2()
    with dype_rope.patch(model, base_grid=(16, 16)):
        out = LUMINA2.run(model, LUMINA2.inputs((72, 2), 1.0))
    assert torch.isfinite(out).all()


def test_no_graph_break_comes_from_dype():
    """The part DyPE adds reads nothing on the host: every graph break of the patched forward is the stock
    model's own."""
    model = tiny_lumina2()
    torch._dynamo.reset()
    with dype_rope.patch(model, base_grid=(2, 3)), torch.no_grad():
        explained = torch._dynamo.explain(model)(**LUMINA2.inputs((4, 6), 0.7))
    torch._dynamo.reset()
    assert explained.graph_break_count > 0  # the stock model's own
    for reason in explained.break_reasons:
        for frame in reason.user_stack:
            assert not any(frame.filename.startswith(root) for root in LIBRARY), reason
