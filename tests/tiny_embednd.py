"""A tiny BFL / ComfyUI-style DiT: an `EmbedND` that returns rotation matrices [B, 1, L, D/2, 2, 2] and one
joint attention block that rotates q and k with them. Written for these tests from the layout alone."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EmbedND(nn.Module):
    """ids [B, L, n_axes] -> float32 rotation matrices [[cos, -sin], [sin, cos]] per pair, [B, 1, L, D/2, 2, 2]."""

    def __init__(self, dim: int, theta: float, axes_dim: list[int]) -> None:
        super().__init__()
        self.dim, self.theta, self.axes_dim = dim, theta, axes_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        blocks = []
        for axis, d in enumerate(self.axes_dim):
            freqs = 1.0 / self.theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=ids.device) / d)
            angle = ids[..., axis].to(torch.float64).unsqueeze(-1) * freqs
            c, s = angle.cos(), angle.sin()
            blocks.append(torch.stack([c, -s, s, c], dim=-1).unflatten(-1, (2, 2)))
        return torch.cat(blocks, dim=-3).unsqueeze(1).float()


def rotate(x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D] turned pair by pair: (a, b) -> M @ (a, b)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    out = (pe * pairs.unsqueeze(-2)).sum(-1)
    return out.flatten(-2).type_as(x)


class TinyEmbedNDDiT(nn.Module):
    """forward(img [B, L, C], img_ids [B, L, 3], txt [B, T, C], txt_ids [B, T, 3], timesteps [B] in [0, 1])."""

    def __init__(self, channels: int = 8, heads: int = 2, axes_dim=(8, 12, 12), theta: float = 10000.0) -> None:
        super().__init__()
        width = heads * sum(axes_dim)
        self.heads = heads
        self.img_in = nn.Linear(channels, width)
        self.txt_in = nn.Linear(channels, width)
        self.time_in = nn.Linear(32, width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.out = nn.Linear(width, channels)
        self.pe_embedder = EmbedND(width // heads, theta, list(axes_dim))

    def forward(self, img, img_ids, txt, txt_ids, timesteps):
        half = torch.arange(16, dtype=torch.float32, device=img.device)
        phase = (timesteps * 1000).unsqueeze(-1) * torch.exp(-math.log(10000.0) * half / 16)
        temb = self.time_in(torch.cat([phase.cos(), phase.sin()], dim=-1)).unsqueeze(1)
        x = torch.cat([self.txt_in(txt), self.img_in(img)], dim=1) + temb
        pe = self.pe_embedder(torch.cat([txt_ids, img_ids], dim=1))
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(rotate(q, pe), rotate(k, pe), v)
        x = x + self.proj(attn.transpose(1, 2).flatten(2))
        return self.out(x[:, txt.shape[1] :])


def tiny_embednd(seed: int = 0) -> TinyEmbedNDDiT:
    torch.manual_seed(seed)
    return TinyEmbedNDDiT().eval()


def image_ids(h: int, w: int, frame: int = 0) -> torch.Tensor:
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    return torch.stack([torch.full_like(rows, frame), rows, cols], dim=-1).float()


def embednd_inputs(h: int, w: int, t: float = 1.0, batch: int = 1, text_len: int = 4, seed: int = 1, cond=None):
    g = torch.Generator().manual_seed(seed)
    ids = image_ids(h, w) if cond is None else torch.cat([image_ids(h, w), image_ids(*cond, frame=1)])
    return dict(
        img=torch.randn(batch, len(ids), 8, generator=g),
        img_ids=ids.expand(batch, -1, -1),
        txt=torch.randn(batch, text_len, 8, generator=g),
        txt_ids=torch.zeros(batch, text_len, 3),
        timesteps=torch.full((batch,), float(t)),
    )
