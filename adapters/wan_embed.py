"""Wan's DyPE rotary module, apart from the adapter so that the table path (wan.py) and the fused path
(wan_fused.py) both build on it without importing each other."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan

from .video import grid_tables, latent_grid


class DyPEWanRotaryPosEmbed(nn.Module):
    """Drop-in for WanRotaryPosEmbed: forward(latent [B, C, F, H, W]) -> (cos, sin) [1, F*H*W, 1, D], float32;
    [B, F*H*W, 1, D] under a plan per sample (a batch whose timesteps have a batch dimension)."""

    def __init__(self, original: nn.Module, plan_of_call: Callable[[tuple[int, int, int], torch.device], RopePlan]):
        super().__init__()
        self.attention_head_dim = original.attention_head_dim
        self.patch_size = original.patch_size
        self.max_seq_len = original.max_seq_len
        self.t_dim, self.h_dim, self.w_dim = original.t_dim, original.h_dim, original.w_dim
        self._plan_of_call = plan_of_call

    def forward(self, hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        grid = latent_grid(hidden_states, self.patch_size)
        plan = self._plan_of_call(grid, hidden_states.device)
        cos, sin = grid_tables(grid, plan, (self.t_dim, self.h_dim, self.w_dim))
        if cos.dim() == 2:  # one plan for the call: the stock batch of 1
            cos, sin = cos[None], sin[None]
        # [B, L, 1, D]: WanAttnProcessor broadcasts the tables' batch against q and k [B, L, heads, D]
        return cos[:, :, None], sin[:, :, None]

    def extra_repr(self) -> str:
        return f"head_dim={self.attention_head_dim}, patch_size={tuple(self.patch_size)}"
