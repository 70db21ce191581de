"""FLUX-like image families of the ids mechanism (FLUX.3, LongCat-Image, Ovis-Image, Bria, Bria-Fibo, Krea 2):
tiny models, their inputs laid out as each pipeline lays them, and the positions of every encoding call written
by hand."""

from __future__ import annotations

import torch

from .row import Family, RopeLayout, Sampler, flow_match, interleaved
from .tiny import grid_ids, tiny

TEXT = 5
SCHEDULER = dict(  # FLUX.1's FlowMatchEulerDiscreteScheduler config, which these pipelines share
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, num_train_timesteps=1000,
    shift=3.0, use_dynamic_shifting=True,
)
SAMPLERS = (Sampler("flow-match", lambda: flow_match(SCHEDULER, 4096)),)


def _noise(batch, n, channels, g):
    return torch.randn(batch, n, channels, generator=g)


def _row(name, build, make_inputs, axes, theta, positions, encoding="pos_embed", pipeline_time=None, **kw):
    return Family(
        name=name,
        adapter=name,
        build=build,
        make_inputs=make_inputs,
        time_arg="timestep",
        pipeline_time=pipeline_time or (lambda ts: ts / 1000),
        encoding=encoding,
        layout=RopeLayout(
            axes=axes, theta=theta, tables=lambda out: [interleaved(*out)], positions=positions, dtype=torch.float32
        ),
        base=kw.pop("base", (4, 5)),
        below=kw.pop("below", (((4, 5), (4, 5)), ((3, 5), (4, 5)), ((4, 2), (4, 5)))),
        above=kw.pop("above", (8, 7)),
        default_base=kw.pop("default_base", (64, 64)),
        samplers=SAMPLERS,
        **kw,
    )


# -- FLUX.3: ids (T, H, W, L), text, image and reference images embedded apart ----------------------------------

TINY_FLUX3 = dict(
    in_channels=4, cond_in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=8, timestep_channels=16, axes_dims_rope=(4, 4, 4, 4),
)


def flux3_ids(grid, frame=0):
    return grid_ids(*grid, frame, tail=1).float()


def flux3_txt_ids(n=TEXT):
    return torch.stack([torch.zeros(n)] * 3 + [torch.arange(n, dtype=torch.float32)], dim=-1)


def flux3_inputs(grid, batch, cond, seed):
    g = torch.Generator().manual_seed(seed)
    ids = flux3_ids(grid)
    x = dict(
        hidden_states=_noise(batch, len(ids), 4, g),
        encoder_hidden_states=_noise(batch, TEXT, 8, g),
        img_ids=ids,
        txt_ids=flux3_txt_ids(),
    )
    if cond is not None:  # a reference image on time index 10, as FLUX.2's pipeline places references
        x["image_cond_ids"] = flux3_ids(cond, frame=10)
        x["image_cond_hidden_states"] = _noise(batch, len(x["image_cond_ids"]), 4, g)
    return x


def flux3_positions(grid, cond, calls):
    out = [flux3_txt_ids().double(), flux3_ids(grid).double()]
    return out + ([flux3_ids(cond, frame=10).double()] if cond is not None else [])


FLUX3 = _row(
    "flux3",
    lambda seed=0, **o: tiny("Flux3Transformer2DModel", TINY_FLUX3, seed, **o),
    flux3_inputs,
    (4, 4, 4, 4),
    10000.0,
    flux3_positions,
    base=(4, 6),
    below=(((4, 6), (4, 6)), ((3, 5), (4, 6)), ((4, 2), (4, 6))),
    above=(8, 9),
    cond=(10, 4),  # larger than the generated image on the row axis
    direct_call=lambda: (flux3_ids((4, 4)),),
)


# -- LongCat-Image: text on modality 0 along the diagonal, the image on modality 1 from (512, 512) ----------------

TINY_FLUX1 = dict(
    patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=8, axes_dims_rope=(4, 6, 6),
)
LONGCAT_START = 512  # LongCatImagePipeline: tokenizer_max_length


def longcat_txt_ids(n=TEXT):
    k = torch.arange(n, dtype=torch.float32)
    return torch.stack([torch.zeros(n), k, k], dim=-1)


def longcat_img_ids(grid, modality=1):
    ids = grid_ids(*grid, modality).float()
    return ids + torch.tensor([0.0, LONGCAT_START, LONGCAT_START])


def longcat_image_ids(grid, cond):
    """The generated image on modality 1; LongCat-Image-Edit's reference image on modality 2."""
    ids = longcat_img_ids(grid)
    return ids if cond is None else torch.cat([ids, longcat_img_ids(cond, modality=2)])


def longcat_inputs(grid, batch, cond, seed):
    g = torch.Generator().manual_seed(seed)
    ids = longcat_image_ids(grid, cond)
    return dict(
        hidden_states=_noise(batch, len(ids), 4, g),
        encoder_hidden_states=_noise(batch, TEXT, 8, g),
        img_ids=ids,
        txt_ids=longcat_txt_ids(),
    )


LONGCAT = _row(
    "longcat-image",
    lambda seed=0, **o: tiny(
        "LongCatImageTransformer2DModel", {**TINY_FLUX1, "pooled_projection_dim": 8}, seed, **o
    ),
    longcat_inputs,
    (4, 6, 6),
    10000.0,
    lambda grid, cond, calls: [torch.cat([longcat_txt_ids(), longcat_image_ids(grid, cond)]).double()],
    cond=(10, 4),
    direct_call=lambda: (longcat_img_ids((4, 4)),),
)


# -- Ovis-Image, Bria, Bria-Fibo: FLUX.1's ids (text at zeros, the image at (0, row, column)) ---------------------


def flux1_ids(grid):
    return grid_ids(*grid).float()


def flux1_positions(grid, cond, calls):
    return [torch.cat([torch.zeros(TEXT, 3), flux1_ids(grid)]).double()]


def ovis_inputs(grid, batch, cond, seed):
    g = torch.Generator().manual_seed(seed)
    ids = flux1_ids(grid)
    return dict(
        hidden_states=_noise(batch, len(ids), 4, g),
        encoder_hidden_states=_noise(batch, TEXT, 8, g),
        img_ids=ids,
        txt_ids=torch.zeros(TEXT, 3),
    )


OVIS = _row(
    "ovis-image",
    lambda seed=0, **o: tiny("OvisImageTransformer2DModel", {**TINY_FLUX1, "out_channels": 4}, seed, **o),
    ovis_inputs,
    (4, 6, 6),
    10000.0,
    flux1_positions,
    direct_call=lambda: (flux1_ids((4, 4)),),
)

BRIA = _row(
    "bria",
    lambda seed=0, **o: tiny("BriaTransformer2DModel", TINY_FLUX1, seed, **o),
    ovis_inputs,
    (4, 6, 6),
    10000.0,
    flux1_positions,
    pipeline_time=lambda ts: ts,  # BriaPipeline passes the scheduler's timestep itself
    direct_call=lambda: (flux1_ids((4, 4)),),
)

TINY_FIBO = {**TINY_FLUX1, "text_encoder_dim": 8}


def fibo_inputs(grid, batch, cond, seed):
    x = ovis_inputs(grid, batch, cond, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x["text_encoder_layers"] = [_noise(batch, TEXT, 8, g) for _ in range(2)]  # one per block
    return x


BRIA_FIBO = _row(
    "bria-fibo",
    lambda seed=0, **o: tiny("BriaFiboTransformer2DModel", TINY_FIBO, seed, **o),
    fibo_inputs,
    (4, 6, 6),
    10000.0,
    flux1_positions,
    pipeline_time=lambda ts: ts,  # BriaFiboPipeline passes the scheduler's timestep itself
    direct_call=lambda: (flux1_ids((4, 4)),),
)


# -- Krea 2: one position_ids of text at the origin then the image (Krea2Pipeline.prepare_position_ids) ----------

TINY_KREA2 = dict(
    in_channels=4, num_layers=1, attention_head_dim=16, num_attention_heads=2, num_key_value_heads=1,
    intermediate_size=16, timestep_embed_dim=16, text_hidden_dim=8, num_text_layers=2, text_num_attention_heads=2,
    text_num_key_value_heads=2, text_intermediate_size=16, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
    axes_dims_rope=(4, 6, 6), rope_theta=1000.0,
)


def krea2_positions(grid):
    return torch.cat([torch.zeros(TEXT, 3), flux1_ids(grid)])


def krea2_inputs(grid, batch, cond, seed):
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    return dict(
        hidden_states=_noise(batch, n, 4, g),
        encoder_hidden_states=torch.randn(batch, TEXT, 2, 8, generator=g),
        position_ids=krea2_positions(grid),
    )


KREA2 = _row(
    "krea2",
    lambda seed=0, **o: tiny("Krea2Transformer2DModel", TINY_KREA2, seed, **o),
    krea2_inputs,
    (4, 6, 6),
    1000.0,
    lambda grid, cond, calls: [krea2_positions(grid).double()],
    encoding="rotary_emb",
    direct_call=lambda: (flux1_ids((4, 4)),),
)

ROWS = (FLUX3, LONGCAT, OVIS, BRIA, BRIA_FIBO, KREA2)
