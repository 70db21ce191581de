"""ControlNets that share their transformer's position encoding: rows of the Qwen-Image adapter. The layout,
the positions (written out by hand in qwen_image.py) and the sampler are the transformer's; the model is the
ControlNet, its output the stack of its block samples."""

from __future__ import annotations

import dataclasses

import torch

from .qwen_image import QWEN_IMAGE, TINY_QWEN_IMAGE, qwen_inputs
from .row import randomise_qk_norms
from .tiny import tiny
from .passed import COSMOS, TINY_COSMOS
from .zimage import ZIMAGE, tiny_zimage, zimage_inputs

# QwenImageControlNetModel takes the transformer's configuration; the control latent has the packed latent's
# channels (extra_condition_channels = 0: not the inpainting variant).
TINY_QWEN_CONTROLNET = dict(TINY_QWEN_IMAGE)


def tiny_qwen_controlnet(seed: int = 0, **overrides):
    model = randomise_qk_norms(tiny("QwenImageControlNetModel", TINY_QWEN_CONTROLNET, seed, **overrides))
    # the control embedder and the output blocks start at zero (zero_module); random here so that the output
    # depends on the attention, and so on the RoPE tables, and the control input matters
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for p in [*model.controlnet_blocks.parameters(), *model.controlnet_x_embedder.parameters()]:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def qwen_controlnet_inputs(grid, batch=1, cond=None, seed=1):
    """The transformer's inputs and a control latent of the same tokens (QwenImageControlNetPipeline packs the
    control image like the latent)."""
    x = qwen_inputs(grid, batch, cond, seed)
    g = torch.Generator().manual_seed(seed + 100)
    x["controlnet_cond"] = torch.randn(x["hidden_states"].shape, generator=g)
    return x


QWEN_IMAGE_CONTROLNET = dataclasses.replace(
    QWEN_IMAGE,
    name="qwen-image-controlnet",
    build=tiny_qwen_controlnet,
    make_inputs=lambda grid, batch, cond, seed: qwen_controlnet_inputs(grid, batch, cond, seed),
    output=lambda out: torch.stack(out.controlnet_block_samples),
    cp_hooks=False,  # QwenImageControlNetModel declares no context-parallel plan
    # fused: the transformer's (the same attention blocks take the same fused processors)
)

ROWS: tuple = (QWEN_IMAGE_CONTROLNET,)


# ZImageControlNetModel: its own control layers on the transformer's shared modules (from_transformer).
TINY_ZIMAGE_CONTROLNET = dict(
    control_layers_places=[0], control_in_dim=4, all_patch_size=(2,), all_f_patch_size=(1,), dim=64,
    n_refiner_layers=1, n_heads=2, n_kv_heads=2,
)


def tiny_zimage_controlnet(seed: int = 0, **overrides):
    import diffusers

    transformer = tiny_zimage(seed)
    controlnet = tiny("ZImageControlNetModel", TINY_ZIMAGE_CONTROLNET, seed + 1, **overrides)
    controlnet = diffusers.ZImageControlNetModel.from_transformer(controlnet, transformer)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():  # the control blocks' outputs start at zero (zero_module): random, so the output moves
        for name, p in controlnet.control_layers.named_parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return controlnet


def zimage_controlnet_inputs(grid, batch=1, cond=None, seed=1):
    x = zimage_inputs(grid, batch, cond, seed)
    g = torch.Generator().manual_seed(seed + 100)
    x["control_context"] = [torch.randn(c.shape, generator=g) for c in x["x"]]
    return x


ZIMAGE_CONTROLNET = dataclasses.replace(
    ZIMAGE,
    name="z-image-controlnet",
    build=tiny_zimage_controlnet,
    make_inputs=lambda grid, batch, cond, seed: zimage_controlnet_inputs(grid, batch, cond, seed),
    output=lambda out: torch.stack([out[k] for k in sorted(out)]),
)

ROWS = (*ROWS, ZIMAGE_CONTROLNET)


# CosmosControlNetModel: the Cosmos row's tiny structure (head dim 24, rope_scale differing per axis); the control
# and base latents both carry 4 channels, plus the condition and padding masks.
TINY_COSMOS_CONTROLNET = dict(
    n_controlnet_blocks=1, in_channels=6, latent_channels=6, model_channels=48, num_attention_heads=2,
    attention_head_dim=24, mlp_ratio=2, text_embed_dim=8, adaln_lora_dim=4, patch_size=(1, 2, 2),
    max_size=TINY_COSMOS["max_size"], rope_scale=TINY_COSMOS["rope_scale"], extra_pos_embed_type=None,
    encoder_hidden_states_channels=8,
)


def cosmos_controlnet_inputs(grid, batch=1, cond=None, seed=1):
    """Cosmos2_5_TransferPipeline's ControlNet call: control and base latents of `grid` tokens, a condition mask
    (zeros: no conditioning frames) and the pixel-size padding mask."""
    g = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    shape = (batch, 4, frames, 2 * rows, 2 * cols)
    return dict(
        controls_latents=torch.randn(shape, generator=g),
        latents=torch.randn(shape, generator=g),
        encoder_hidden_states=torch.randn(batch, 3, 8, generator=g),
        condition_mask=torch.zeros(batch, 1, frames, 2 * rows, 2 * cols),
        padding_mask=torch.zeros(1, 1, 16 * rows, 16 * cols),
        return_dict=False,
    )


COSMOS_CONTROLNET = dataclasses.replace(
    COSMOS,
    name="cosmos-controlnet",
    adapter="cosmos_controlnet",
    build=lambda seed=0, **o: tiny("CosmosControlNetModel", TINY_COSMOS_CONTROLNET, seed, **o),
    make_inputs=cosmos_controlnet_inputs,
    output=lambda out: torch.stack(out[0]),
)

ROWS = (*ROWS, COSMOS_CONTROLNET)
