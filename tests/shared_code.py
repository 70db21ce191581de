"""The host codebases the integration tests run against: ComfyUI and the Black Forest Labs reference code in
the workspace's shared/ folder beside the repository (never copied into it). Outside a workspace that has
them the tests skip; under CI (CI set in the environment) a missing folder fails instead of skipping."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from reference_dype import rope_pairs

SHARED = Path(__file__).resolve().parents[2] / "shared"


def require(name: str) -> Path:
    """shared/<name>, importable: its folder goes on sys.path (once)."""
    path = SHARED / name
    if not path.is_dir():
        message = f"{path} is missing: the {name} integration tests need the shared host code"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return path


def reference_rotations(ids, axes_dims, theta, scales, t, base_lens, **schedule) -> torch.Tensor:
    """float64 rotation matrices [..., L, D/2, 2, 2] of DyPE from the paper's formulas (reference_dype), for
    ids [L, n_axes] whose axis a is scales[a] times its base_lens[a] at diffusion time t."""
    cos, sin = rope_pairs(ids, axes_dims, theta, scales, t, base_lens, **schedule)
    return torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))
