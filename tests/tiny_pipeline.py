"""A tiny FluxPipeline from configs: the tiny FLUX transformer, a one-block AutoencoderKL (VAE factor 1) and
FLUX's scheduler config; vae_blocks=4 gives FLUX's VAE factor 8, for token counts at real pixel sizes. There is
no text encoder or tokenizer: callers pass prompt embeddings directly."""

from __future__ import annotations

import torch

from families.flux import FLUX_SCHEDULER, TINY_FLUX, tiny_flux


def tiny_flux_pipeline(seed: int = 0, vae_blocks: int = 1):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * vae_blocks,
        up_block_types=("UpDecoderBlock2D",) * vae_blocks,
        block_out_channels=(4,) * vae_blocks,
        layers_per_block=1,
        latent_channels=TINY_FLUX["in_channels"] // 4,  # FLUX packs 2 x 2 latents into one token
        norm_num_groups=1,
        scaling_factor=1.0,
        shift_factor=0.0,
    ).eval()
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=tiny_flux(seed),
    )


def prompt_embeddings(text_len: int = 5, seed: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        prompt_embeds=torch.randn(1, text_len, TINY_FLUX["joint_attention_dim"], generator=g),
        pooled_prompt_embeds=torch.randn(1, TINY_FLUX["pooled_projection_dim"], generator=g),
    )
