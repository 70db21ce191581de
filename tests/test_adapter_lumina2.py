"""What only Lumina2 has: the base grid from the model's own sample_size and grids beyond the stock table length.
Its forward breaks its own graph (caption lengths read on the host); that DyPE adds no break and no recompilation
is the contract's compile test (tests/test_contract.py)."""

from __future__ import annotations

import torch

import dype_rope
from families.lumina2 import LUMINA2, tiny_lumina2


def test_base_grid_from_sample_size():
    with dype_rope.patch(tiny_lumina2(sample_size=128)) as handle:
        assert handle.base_grid == (64, 64)  # Lumina-Image-2.0's 1024 px


def test_grids_beyond_the_stock_table_length():
    # axes_lens is 64: the stock embedding cannot index row 64; the DyPE tables are computed, not gathered.
    model = tiny_lumina2()
    with dype_rope.patch(model, base_grid=(16, 16)):
        out = LUMINA2.run(model, LUMINA2.inputs((72, 2), 1.0))
    assert torch.isfinite(out).all()
