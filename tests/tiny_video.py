"""Tiny, seeded video DiTs (Wan, HunyuanVideo) built from configs, their inputs and their schedulers."""

from __future__ import annotations

import torch

# head dim 18: Wan splits it 6 / 6 / 6 (frames / rows / columns), 3 pairs per axis.
TINY_WAN = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=18,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=16,
    ffn_dim=32,
    num_layers=1,
    rope_max_seq_len=64,
)

TINY_HUNYUAN_VIDEO = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    patch_size=1,
    patch_size_t=1,
    text_embed_dim=16,
    pooled_projection_dim=8,
    rope_axes_dim=(4, 6, 6),
)

# The schedulers the released pipelines ship (scheduler_config.json of Wan 2.1 and HunyuanVideo).
WAN_SCHEDULER = dict(
    num_train_timesteps=1000,
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    flow_shift=3.0,
    solver_order=2,
)
HUNYUAN_VIDEO_SCHEDULER = dict(num_train_timesteps=1000, shift=7.0)


def tiny_wan(seed: int = 0, **overrides):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**{**TINY_WAN, **overrides}).eval()


def tiny_hunyuan_video(seed: int = 0, **overrides):
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(**{**TINY_HUNYUAN_VIDEO, **overrides}).eval()


def wan_scheduler():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler.from_config(WAN_SCHEDULER)


def hunyuan_video_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(HUNYUAN_VIDEO_SCHEDULER)


def wan_inputs(frames: int, rows: int, cols: int, timestep: float = 999.0, batch: int = 1, seed: int = 1):
    """Inputs for a latent whose token grid is frames x rows x cols (2 x 2 spatial patches)."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, TINY_WAN["in_channels"], frames, 2 * rows, 2 * cols, generator=g),
        timestep=torch.full((batch,), float(timestep)),
        encoder_hidden_states=torch.randn(batch, 5, TINY_WAN["text_dim"], generator=g),
        return_dict=False,
    )


def hunyuan_video_inputs(frames: int, rows: int, cols: int, timestep: float = 1000.0, batch: int = 1, seed: int = 1):
    """Inputs for a latent whose token grid is frames x rows x cols (1 x 1 patches)."""
    g = torch.Generator().manual_seed(seed)
    cfg = TINY_HUNYUAN_VIDEO
    return dict(
        hidden_states=torch.randn(batch, cfg["in_channels"], frames, rows, cols, generator=g),
        timestep=torch.full((batch,), float(timestep)),
        encoder_hidden_states=torch.randn(batch, 4, cfg["text_embed_dim"], generator=g),
        encoder_attention_mask=torch.ones(batch, 4, dtype=torch.long),
        pooled_projections=torch.randn(batch, cfg["pooled_projection_dim"], generator=g),
        guidance=torch.full((batch,), 6000.0),
        return_dict=False,
    )


def video_positions(frames: int, rows: int, cols: int) -> torch.Tensor:
    """(frame, row, column) of every token, frames-major as both models flatten their latents: [F*H*W, 3]."""
    f, h, w = torch.meshgrid(torch.arange(frames), torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([f, h, w], dim=-1).reshape(-1, 3).double()
