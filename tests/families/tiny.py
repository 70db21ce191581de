"""Tiny, seeded diffusers models built from configs: no weights are ever downloaded."""

from __future__ import annotations

import torch
from torch import nn


def tiny(class_name: str, config: dict, seed: int = 0, **overrides) -> nn.Module:
    import diffusers

    torch.manual_seed(seed)
    return getattr(diffusers, class_name)(**{**config, **overrides}).eval()


def grid_ids(rows: int, cols: int, lead: float = 0, tail: int = 0) -> torch.Tensor:
    """(lead, row, column[, 0 ...]) of every token of a rows x cols image, row-major: [rows * cols, 3 + tail]."""
    r = torch.arange(rows).repeat_interleave(cols)
    c = torch.arange(cols).repeat(rows)
    return torch.stack([torch.full_like(r, lead), r, c] + [torch.zeros_like(r)] * tail, dim=-1)

