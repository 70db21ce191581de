"""ControlNets that share their transformer's position encoding: rows of the Qwen-Image adapter. The layout,
the positions (written out by hand in qwen_image.py) and the sampler are the transformer's; the model is the
ControlNet, its output the stack of its block samples."""

from __future__ import annotations

import dataclasses

import torch

from .qwen_image import QWEN_IMAGE, TINY_QWEN_IMAGE, qwen_inputs
from .row import randomise_qk_norms
from .tiny import tiny

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
    fused=None,  # the fused backend's contract runs on the transformer's row
)

ROWS: tuple = (QWEN_IMAGE_CONTROLNET,)
