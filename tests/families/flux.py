"""FLUX.1 (and Chroma, built on the same FluxPosEmbed) and FLUX.2: tiny models, inputs, layouts, rows."""

from __future__ import annotations

import torch

from .row import Family, Fused, RopeLayout, Sampler, flow_match, interleaved, randomise_qk_norms
from .tiny import grid_ids, tiny

TEXT = 5  # text tokens of every input

TINY_FLUX = dict(
    patch_size=1,
    in_channels=4,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=(4, 6, 6),
)
# FLUX.1's scheduler config (base_shift 0.5 at 256 tokens, max_shift 1.15 at 4096 tokens, exponential shift).
FLUX_SCHEDULER = dict(
    base_image_seq_len=256,
    base_shift=0.5,
    max_image_seq_len=4096,
    max_shift=1.15,
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
)


def tiny_flux(seed: int = 0, **overrides):
    return randomise_qk_norms(tiny("FluxTransformer2DModel", TINY_FLUX, seed, **overrides))


def flux_img_ids(h: int, w: int, frame: int = 0) -> torch.Tensor:
    return grid_ids(h, w, frame).float()


def image_ids(grid, cond) -> torch.Tensor:
    """The generated image on frame 0, a conditioning image (FLUX Kontext) on frame 1."""
    ids = flux_img_ids(*grid)
    return ids if cond is None else torch.cat([ids, flux_img_ids(*cond, frame=1)])


def flux_inputs(h, w, t=1.0, batch=1, text_len=TEXT, seed=1, cond=None, pooled=True):
    g = torch.Generator().manual_seed(seed)
    ids = image_ids((h, w), cond)
    x = dict(
        hidden_states=torch.randn(batch, len(ids), TINY_FLUX["in_channels"], generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, TINY_FLUX["joint_attention_dim"], generator=g),
        pooled_projections=torch.randn(batch, TINY_FLUX["pooled_projection_dim"], generator=g),
        timestep=torch.full((batch,), float(t)),
        img_ids=ids,
        txt_ids=torch.zeros(text_len, 3),
    )
    if not pooled:
        del x["pooled_projections"]
    return x


FLUX_LAYOUT = RopeLayout(
    axes=(4, 6, 6),
    theta=10000.0,
    tables=lambda out: [interleaved(*out)],
    positions=lambda grid, cond, calls: [torch.cat([torch.zeros(TEXT, 3), image_ids(grid, cond)]).double()],
    dtype=torch.float32,
)


def _flux_fused() -> Fused:
    from diffusers.models.transformers.transformer_flux import FluxAttention, FluxIPAdapterAttnProcessor

    from dype_rope.adapters.flux_fused import FusedFluxAttnProcessor, FusedFluxPosEmbed

    def unsupported(model):
        attn = next(m for m in model.modules() if isinstance(m, FluxAttention))
        return attn, FluxIPAdapterAttnProcessor(hidden_size=32, cross_attention_dim=32, num_tokens=(1,))

    return Fused(
        attentions=(FluxAttention,),
        processors={FluxAttention: FusedFluxAttnProcessor},
        encoding=FusedFluxPosEmbed,
        unsupported=unsupported,
    )


def _flux_row(name: str, build, pooled: bool) -> Family:
    return Family(
        name=name,
        adapter="flux",
        build=build,
        make_inputs=lambda grid, batch, cond, seed: flux_inputs(
            *grid, batch=batch, seed=seed, cond=cond, pooled=pooled
        ),
        time_arg="timestep",
        pipeline_time=lambda ts: ts / 1000,  # the pipeline passes sigma
        encoding="pos_embed",
        layout=FLUX_LAYOUT,
        base=(4, 5),
        below=(((4, 5), (4, 5)), ((3, 5), (4, 5)), ((4, 2), (4, 5))),
        above=(8, 7),
        default_base=(64, 64),
        samplers=(Sampler("flux", lambda: flow_match(FLUX_SCHEDULER, 4096)),),
        direct_call=lambda: (flux_img_ids(4, 4),),
        cond=(10, 4),  # larger than the generated image on the row axis
        fused=_flux_fused() if name == "flux" else None,
    )


def tiny_chroma(seed: int = 0):
    config = {k: v for k, v in TINY_FLUX.items() if k != "pooled_projection_dim"}
    extra = dict(approximator_num_channels=8, approximator_hidden_dim=16, approximator_layers=1)
    return tiny("ChromaTransformer2DModel", {**config, **extra}, seed)


FLUX = _flux_row("flux", tiny_flux, pooled=True)
CHROMA = _flux_row("chroma", tiny_chroma, pooled=False)


# -- FLUX.2: four axes (T, H, W, L), theta 2000 ----------------------------------------------------------------

TINY_FLUX2 = dict(
    patch_size=1,
    in_channels=4,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=32,
    num_attention_heads=2,
    joint_attention_dim=16,
    timestep_guidance_channels=32,
    axes_dims_rope=(8, 8, 8, 8),
)
# FLUX.2's scheduler config (FlowMatchEulerDiscreteScheduler); the pipeline passes its own mu.
FLUX2_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")


def tiny_flux2(seed: int = 0, **overrides):
    return randomise_qk_norms(tiny("Flux2Transformer2DModel", TINY_FLUX2, seed, **overrides))


def flux2_ids(h: int, w: int, frame: int = 0) -> torch.Tensor:
    """Position ids (T, H, W, L) of an h x w latent image on time index `frame`, as the FLUX.2 pipeline lays them."""
    return grid_ids(h, w, frame, tail=1)


def flux2_txt_ids(n: int) -> torch.Tensor:
    return torch.stack([torch.zeros(n, dtype=torch.long)] * 3 + [torch.arange(n)], dim=-1)


def flux2_image_ids(grid, cond) -> torch.Tensor:
    """The generated image on time index 0, a reference image on time index 10."""
    ids = flux2_ids(*grid)
    return ids if cond is None else torch.cat([ids, flux2_ids(*cond, frame=10)])


def flux2_inputs(grid, batch=1, cond=None, seed=1, text_len=TEXT):
    g = torch.Generator().manual_seed(seed)
    ids = flux2_image_ids(grid, cond)
    return dict(
        hidden_states=torch.randn(batch, len(ids), TINY_FLUX2["in_channels"], generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, TINY_FLUX2["joint_attention_dim"], generator=g),
        img_ids=ids.unsqueeze(0).expand(batch, -1, -1),
        txt_ids=flux2_txt_ids(text_len).unsqueeze(0).expand(batch, -1, -1),
        guidance=torch.full((batch,), 4.0),
    )


def _flux2_fused() -> Fused:
    from diffusers.models.transformers.transformer_flux2 import (
        Flux2Attention,
        Flux2KVAttnProcessor,
        Flux2ParallelSelfAttention,
    )

    from dype_rope.adapters.flux2_fused import (
        FusedFlux2AttnProcessor,
        FusedFlux2ParallelSelfAttnProcessor,
        FusedFlux2PosEmbed,
    )

    def unsupported(model):
        return next(m for m in model.modules() if isinstance(m, Flux2Attention)), Flux2KVAttnProcessor()

    return Fused(
        attentions=(Flux2Attention, Flux2ParallelSelfAttention),
        processors={
            Flux2Attention: FusedFlux2AttnProcessor,
            Flux2ParallelSelfAttention: FusedFlux2ParallelSelfAttnProcessor,
        },
        encoding=FusedFlux2PosEmbed,
        unsupported=unsupported,
        cond=(2, 3),  # a reference image on time index 10: the kernels must read all four axes
    )


def _flux2_sampler():
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    # The shift the pipeline would use at 1024 px (4096 tokens); the tiny model only sees the timesteps.
    return flow_match(FLUX2_SCHEDULER, 4096, mu=compute_empirical_mu(4096, 28))


FLUX2 = Family(
    name="flux2",
    adapter="flux2",
    build=tiny_flux2,
    make_inputs=lambda grid, batch, cond, seed: flux2_inputs(grid, batch, cond, seed),
    time_arg="timestep",
    pipeline_time=lambda ts: ts / 1000,
    encoding="pos_embed",
    layout=RopeLayout(
        axes=(8, 8, 8, 8),
        theta=2000.0,
        tables=lambda out: [interleaved(*out)],
        # called twice: image tokens (a reference image on T = 10), then text tokens (T = H = W = 0, L = index)
        positions=lambda grid, cond, calls: [flux2_image_ids(grid, cond).double(), flux2_txt_ids(TEXT).double()],
        dtype=torch.float32,
    ),
    base=(4, 6),
    below=(((4, 6), (4, 6)), ((3, 5), (4, 6)), ((4, 2), (4, 6))),
    above=(8, 9),
    default_base=(64, 64),
    samplers=(Sampler("flux2", _flux2_sampler),),
    direct_call=lambda: (flux2_ids(4, 4),),
    cond=(10, 4),  # larger than the generated image on the row axis
    fused=_flux2_fused(),
)
