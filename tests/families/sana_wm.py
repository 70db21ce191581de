"""The Sana-WM row (adapters/families/by_sana_wm.py): a tiny SanaWMTransformer3DModel with one GDN (linear
attention) block and one softmax block, its inputs as SanaWMPipeline builds them: the latent [B, C, F, H, W]
(patch 1), per-frame timesteps [B, 1, F] with the conditioning first frame at 0, the camera's raymap and
Plücker chunks from diffusers' own prepare_camera, the text mask. The tables are complex [1, 1, L, D/2]."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .grid import ANGLE_TOL, EULER_FLOW, _sampler
from .row import Family, RopeLayout, complex_pairs
from .tiny import tiny
from .video import video_positions

TEXT = 5
# head dim 24: Wan's split 8 / 8 / 8 channels (4 pairs per axis); the camera branch takes half of it (2 pairs each)
TINY_SANA_WM = dict(
    in_channels=4, num_layers=2, softmax_every_n=2, hidden_size=48, num_attention_heads=2, linear_head_dim=24,
    caption_channels=16, chunk_plucker_channels=48, chunk_plucker_post_attn_blocks=2,
)
VAE_STRIDE = (8, 32, 32)  # the LTX-2 VAE's (frames, rows, columns) per latent pixel, as SanaWMPipeline reads it


def camera(frames: int, rows: int, cols: int) -> dict:
    """camera_conditions [1, F, 20] and chunk_plucker [1, 48, F, H, W] of a camera moving forward and turning,
    built by SanaWMPipeline's own prepare_camera for a video of 8 (F - 1) + 1 frames."""
    from diffusers.pipelines.sana_wm.cam_utils import prepare_camera

    n = VAE_STRIDE[0] * (frames - 1) + 1
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    angle = np.linspace(0.0, 0.3, n)
    poses[:, 0, 0], poses[:, 0, 2], poses[:, 2, 0], poses[:, 2, 2] = (
        np.cos(angle), np.sin(angle), -np.sin(angle), np.cos(angle),
    )
    poses[:, 2, 3] = np.linspace(0.0, 1.0, n)
    height, width = rows * VAE_STRIDE[1], cols * VAE_STRIDE[2]
    intrinsics = np.tile(np.array([[0.8 * width, 0.8 * width, width / 2, height / 2]], dtype=np.float32), (n, 1))
    cam = prepare_camera(poses, intrinsics, target_size=(height, width), vae_stride=VAE_STRIDE)
    return dict(camera_conditions=cam["raymap"].unsqueeze(0), chunk_plucker=cam["chunk_plucker"].unsqueeze(0))


def sana_wm_inputs(grid, batch=1, cond=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    cam = {k: v.expand(batch, *v.shape[1:]) for k, v in camera(f, h, w).items()}
    return dict(
        hidden_states=torch.randn(batch, 4, f, h, w, generator=g),
        encoder_hidden_states=torch.randn(batch, 1, TEXT, 16, generator=g),
        mask=torch.ones(batch, TEXT),
        return_dict=False,
        **cam,
    )


@dataclasses.dataclass(frozen=True)
class PerFrameFamily(Family):
    """SanaWMPipeline's timestep: the step's timestep on every latent frame, [B, 1, F], but the first (the
    encoded input image, held clean) at 0: torch.min(t, (1 - condition_mask) * 1000)."""

    def inputs_at(self, grid, timestep, batch=1, cond=None, seed=1):
        x = super().inputs_at(grid, timestep, batch, cond, seed)
        per_sample = x[self.time_arg].reshape(batch, 1, 1)
        frames = per_sample.expand(batch, 1, x["hidden_states"].shape[2]).clone()
        frames[:, :, 0] = 0.0
        x[self.time_arg] = frames
        return x


SANA_WM = PerFrameFamily(
    name="sana_wm",
    adapter="sana_wm",
    build=lambda seed=0, **o: tiny("SanaWMTransformer3DModel", TINY_SANA_WM, seed, **o),
    make_inputs=sana_wm_inputs,
    time_arg="timestep",
    pipeline_time=lambda ts: ts,
    encoding="rope",
    layout=RopeLayout(
        axes=(8, 8, 8),
        theta=10000.0,
        tables=lambda out: [complex_pairs(out)],
        positions=lambda grid, cond, calls: [video_positions(*grid)],
        dtype=torch.complex64,
        tol=ANGLE_TOL,  # the stock table turns positions by float32 angles
    ),
    base=(3, 4),
    below=(((3, 3, 4), (3, 4)), ((2, 2, 3), (3, 4)), ((5, 3, 4), (5, 3, 4))),  # last: frames rescaled too
    above=(2, 6, 7),
    default_base=(22, 40),
    samplers=(_sampler("flow-match-euler", "FlowMatchEulerDiscreteScheduler", EULER_FLOW),),
    output=lambda out: out[0],
    lead=(2,),
    direct_call=lambda: ((2, 4, 4),),
)
