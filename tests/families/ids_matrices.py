"""Ids-mechanism families whose tables are not FLUX's (cos, sin): PRX (rotation matrices over (row, column) ids it
builds itself, batched) and nunchaku's quantized FLUX.1 (its Python EmbedND returns [1, 1, L, D/2, 1, 2] holding
(sin, cos)). nunchaku is not installable here (CUDA kernels): its model is re-created from its published code, with
the class name it matches by and the output format its quantized blocks read."""

from __future__ import annotations

import torch
from torch import nn

from .flux import TINY_FLUX, flux_inputs, image_ids
from .ids_flux_like import SAMPLERS
from .row import Family, RopeLayout, matrix_pairs
from .tiny import grid_ids, tiny

# -- PRX ------------------------------------------------------------------------------------------------------

TINY_PRX = dict(
    in_channels=4, patch_size=2, context_in_dim=8, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=1,
    axes_dim=[6, 10],
)
TEXT = 5


def prx_inputs(grid, batch, cond, seed):
    g = torch.Generator().manual_seed(seed)
    p = TINY_PRX["patch_size"]
    return dict(
        hidden_states=torch.randn(batch, 4, grid[0] * p, grid[1] * p, generator=g),
        encoder_hidden_states=torch.randn(batch, TEXT, 8, generator=g),
        attention_mask=torch.ones(batch, TEXT, dtype=torch.bool),
    )


def prx_positions(grid, cond, calls):
    """(row, column) of every token, row-major (PRX's get_image_ids), for every sample of the batch."""
    batch = calls[0][0].shape[0]
    return [grid_ids(*grid)[:, 1:].double().repeat(batch, 1)]


def tiny_prx(seed: int = 0, **overrides):
    """PRX initialises its blocks' modulation to zero (every attention gated off): random ones, so that the
    position encoding reaches the output."""
    model = tiny("PRXTransformer2DModel", TINY_PRX, seed, **overrides)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".modulation." in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=g))
    return model


PRX = Family(
    name="prx",
    adapter="prx",
    build=tiny_prx,
    make_inputs=prx_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts / 1000,  # PRXPipeline passes t / num_train_timesteps
    encoding="pe_embedder",
    layout=RopeLayout(
        axes=(6, 10),
        theta=10000.0,
        tables=lambda out: [matrix_pairs(out)],
        positions=prx_positions,
        dtype=torch.float32,
        rescaled=(0, 1),
    ),
    base=(4, 5),
    below=(((4, 5), (4, 5)), ((3, 5), (4, 5)), ((4, 2), (4, 5))),
    above=(8, 7),
    default_base=(32, 32),
    samplers=SAMPLERS,
    direct_call=lambda: (grid_ids(4, 4)[:, 1:].float().unsqueeze(0),),
)


# -- nunchaku FLUX.1 ------------------------------------------------------------------------------------------


class NunchakuEmbedND(nn.Module):
    """nunchaku's EmbedND as its code writes it: ids [L, n] -> [1, 1, L, D/2, 1, 2] of (sin, cos), angles in
    float64."""

    def __init__(self, dim: int, theta: int, axes_dim: list[int]) -> None:
        super().__init__()
        self.dim, self.theta, self.axes_dim = dim, theta, axes_dim

    @staticmethod
    def rope(pos: torch.Tensor, dim: int, theta: int) -> torch.Tensor:
        scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
        omega = 1.0 / (theta**scale)
        batch = pos.shape[0]
        out = torch.einsum("...n,d->...nd", pos.double(), omega)
        return torch.stack([out.sin(), out.cos()], dim=-1).view(batch, -1, dim // 2, 1, 2).float()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids[None, ...]
        emb = torch.cat([self.rope(ids[..., i], self.axes_dim[i], self.theta) for i in range(ids.shape[-1])], -3)
        return emb.unsqueeze(1)


def _sin_cos_processor():
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    class SinCosAttnProcessor(FluxAttnProcessor):
        """Reads the (sin, cos) tensor as nunchaku's quantized blocks do, then attends as FLUX.1."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
            sin, cos = image_rotary_emb[0, 0, :, :, 0].unbind(-1)  # [L, D/2] each
            tables = (cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1))
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, tables)

    return SinCosAttnProcessor


def nunchaku_class(module: str, name: str) -> type:
    """FluxTransformer2DModel's subclass under nunchaku's module and class name (how DyPE matches it)."""
    from diffusers import FluxTransformer2DModel

    return type(name, (FluxTransformer2DModel,), {"__module__": module, "__qualname__": name})


NUNCHAKU_V1 = ("nunchaku.models.transformers.transformer_flux", "NunchakuFluxTransformer2dModel")
NUNCHAKU_V2 = ("nunchaku.models.transformers.transformer_flux_v2", "NunchakuFluxTransformer2DModelV2")


def tiny_nunchaku(seed: int = 0, which=NUNCHAKU_V1):
    torch.manual_seed(seed)
    model = nunchaku_class(*which)(**TINY_FLUX).eval()
    model.pos_embed = NunchakuEmbedND(dim=32, theta=10000, axes_dim=list(TINY_FLUX["axes_dims_rope"]))
    model.set_attn_processor(_sin_cos_processor()())
    return model


def sin_cos_pairs(out: torch.Tensor) -> list[torch.Tensor]:
    """[1, 1, L, D/2, 1, 2] of (sin, cos) -> [L, D/2, 2] of (cos, sin)."""
    sin, cos = out[0, 0, :, :, 0].unbind(-1)
    return [torch.stack([cos, sin], -1).double()]


NUNCHAKU = Family(
    name="nunchaku-flux",
    adapter="nunchaku-flux",
    build=tiny_nunchaku,
    make_inputs=lambda grid, batch, cond, seed: flux_inputs(*grid, batch=batch, seed=seed, cond=cond),
    time_arg="timestep",
    pipeline_time=lambda ts: ts / 1000,
    encoding="pos_embed",
    layout=RopeLayout(
        axes=TINY_FLUX["axes_dims_rope"],
        theta=10000.0,
        tables=sin_cos_pairs,
        positions=lambda grid, cond, calls: [torch.cat([torch.zeros(5, 3), image_ids(grid, cond)]).double()],
        dtype=torch.float32,
    ),
    base=(4, 5),
    below=(((4, 5), (4, 5)), ((3, 5), (4, 5)), ((4, 2), (4, 5))),
    above=(8, 7),
    default_base=(64, 64),
    samplers=SAMPLERS,
    direct_call=lambda: (grid_ids(4, 4).float(),),
    cond=(10, 4),  # a FLUX Kontext conditioning image on frame 1
)

ROWS = (PRX, NUNCHAKU)
