"""The Black Forest Labs reference code (shared/bfl_flux: FLUX.1 `flux.model.Flux`, FLUX.2 `flux2.model.Flux2`),
patched by the generic EmbedND adapter. Their `rope()` computes the tables in the dtype of the ids (float32 in
their sampling code): at or below the base grid the patched model must still be their own, bit for bit;
above it the tables must be DyPE's (float64 reference from the paper's formulas), for image and text alike."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from shared_code import reference_rotations, require

BASE = (6, 8)


@pytest.fixture(scope="module")
def bfl():
    require("bfl_flux")  # needs einops, in the dev extra
    from flux.model import Flux, FluxParams
    from flux2.model import Flux2, Flux2Params

    return Flux, FluxParams, Flux2, Flux2Params


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def grid_ids(rows: int, cols: int, axes: int, batch: int = 1) -> torch.Tensor:
    """Image ids as upstream's sampling.prepare() builds them: (0, row, col[, 0]) in float32."""
    ids = torch.zeros(rows, cols, axes)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(1, rows * cols, axes).expand(batch, -1, -1).contiguous()


class Flux1:
    axes_dims, theta = (8, 12, 12), 10000

    def __init__(self, bfl):
        Flux, FluxParams = bfl[:2]
        params = FluxParams(in_channels=8, out_channels=8, vec_in_dim=16, context_in_dim=16, hidden_size=64,
                            mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=list(self.axes_dims),
                            theta=self.theta, qkv_bias=True, guidance_embed=False)
        self.model = randomised(Flux(params), 0)

    def __call__(self, rows, cols, t):
        g = torch.Generator().manual_seed(rows * 100 + cols)
        return self.model(
            img=torch.randn(2, rows * cols, 8, generator=g), img_ids=grid_ids(rows, cols, 3, 2),
            txt=torch.randn(2, 5, 16, generator=g), txt_ids=torch.zeros(2, 5, 3),
            timesteps=torch.full((2,), t), y=torch.randn(2, 16, generator=g),
        )


class Flux2:
    axes_dims, theta = (8, 8, 8, 8), 2000

    def __init__(self, bfl):
        Flux2, Flux2Params = bfl[2:]
        params = Flux2Params(in_channels=8, context_in_dim=16, hidden_size=64, num_heads=2, depth=1,
                             depth_single_blocks=1, axes_dim=list(self.axes_dims), theta=self.theta, mlp_ratio=2.0)
        self.model = randomised(Flux2(params), 1)

    def __call__(self, rows, cols, t):
        g = torch.Generator().manual_seed(rows * 100 + cols)
        ctx_ids = torch.zeros(2, 5, 4)
        ctx_ids[..., 3] = torch.arange(5)  # FLUX.2 text tokens sit on the fourth axis
        return self.model(
            x=torch.randn(2, rows * cols, 8, generator=g), x_ids=grid_ids(rows, cols, 4, 2),
            timesteps=torch.full((2,), t), ctx=torch.randn(2, 5, 16, generator=g), ctx_ids=ctx_ids,
            guidance=torch.full((2,), 3.5),
        )


@pytest.fixture(params=[Flux1, Flux2], ids=["flux1", "flux2"])
def family(request, bfl):
    return request.param(bfl)


def embedded(family, rows, cols, t):
    """(ids, tables) of every pe_embedder call of one model call."""
    seen = []
    hook = family.model.pe_embedder.register_forward_hook(lambda m, a, out: seen.append((a[0], out)))
    try:
        with torch.no_grad():
            family(rows, cols, t)
    finally:
        hook.remove()
    return seen


@pytest.mark.parametrize("rows, cols", [(6, 8), (3, 5), (6, 2)])
@pytest.mark.parametrize("t", [1.0, 0.37, 0.0])
def test_bit_exact_at_or_below_the_base_grid(family, rows, cols, t):
    with torch.no_grad():
        stock = family(rows, cols, t)
    stock_tables = [out for _, out in embedded(family, rows, cols, t)]
    with dype_rope.patch(family.model, base_grid=BASE):
        with torch.no_grad():
            patched = family(rows, cols, t)
        tables = [out for _, out in embedded(family, rows, cols, t)]
    assert torch.equal(patched, stock)
    assert all(torch.equal(a, b) for a, b in zip(tables, stock_tables)) and len(tables) == len(stock_tables)


@pytest.mark.parametrize("rows, cols", [(12, 8), (9, 20)])
@pytest.mark.parametrize("t", [1.0, 0.5, 0.1])
def test_tables_follow_dype_above_the_base_grid(family, rows, cols, t):
    n = len(family.axes_dims)
    scales = [1.0] * n
    scales[1], scales[2] = rows / BASE[0], cols / BASE[1]
    base_lens = [1.0] * n
    base_lens[1], base_lens[2] = BASE
    with dype_rope.patch(family.model, base_grid=BASE):
        calls = embedded(family, rows, cols, t)
    assert len(calls) == (1 if family.model.__class__.__name__ == "Flux" else 2)  # FLUX.2: image, then text
    stretched = torch.cat([torch.full((d // 2,), a in (1, 2)) for a, d in enumerate(family.axes_dims)])
    for ids, table in calls:  # text and image tokens of a call share one plan: the image's
        for b in range(ids.shape[0]):
            expected = reference_rotations(ids[b], family.axes_dims, family.theta, scales, t, base_lens)
            torch.testing.assert_close(table[b, 0][..., stretched, :, :], expected[..., stretched, :, :].float(),
                                       rtol=1e-5, atol=2e-6)


def test_remove_restores_the_stock_model(family):
    with torch.no_grad():
        before = family(12, 16, 0.8)
    handle = dype_rope.patch(family.model, base_grid=BASE)
    with torch.no_grad():
        assert not torch.equal(family(12, 16, 0.8), before)
    handle.remove()
    with torch.no_grad():
        assert torch.equal(family(12, 16, 0.8), before)
