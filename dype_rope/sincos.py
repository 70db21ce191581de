"""DyPE for absolute 2D sin-cos position embeddings (DiT, SD3): the RoPE schedules applied to their frequencies.

Layout (diffusers' get_2d_sincos_pos_embed): D channels form two halves of C = D/2; the first half encodes the
column coordinate, the second the row (its meshgrid puts w first). A half is [sin(p * omega_j), cos(p * omega_j)]
for j < C/2, with omega_j = 10000 ** (-j / (C/2)).

Mapping onto the schedules: a half of C channels carries C/2 frequencies, as a RoPE axis of C channels carries
C/2 rotation pairs, and omega_j = 10000 ** (-2j / C) is exactly schedules.plain_inv_freq(C, 10000) (the two
exponents are the same rational, so they round to the same float). A schedule called with dim = C and
theta = 10000 therefore rescales omega the way it rescales a RoPE axis:
  PI    omega / s (positions scaled by 1/s),
  NTK   the base 10000 becomes 10000 * s ** (C / (C - 2)),
  YaRN  by parts, with base_len the trained extent in *position units* (tokens x position spacing): the ramp
        counts how many turns a frequency makes across the trained image, and the spacing of SD3's grid is not 1,
  Dy-*  the same with kappa(t).

Centring: unlike RoPE, an absolute embedding is not shift-invariant. The model knows the band of positions its
training images covered, so a rescaled frequency acts on the offset from the trained centre c:
    angle_j(p) = omega_j * c + omega'_j * (p - c).
PI maps a larger image back onto the trained band (not onto a band shrunk towards 0); NTK and YaRN do the same
for the low frequencies and leave the high ones as they are.

YaRN's attention temperature (mscale) has no counterpart here: an additive embedding has no attention logits to
sharpen, and scaling its amplitude would change the balance between content and position the model learned.
The embedding keeps unit amplitude.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import DyPEConfig
from .schedules import get_schedule, plain_inv_freq

SINCOS_THETA = 10000.0


def check_channels(channels: int) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0 or channels % 2:
        raise ValueError(f"a sin-cos axis needs a positive even number of channels, got {channels!r}")
    return channels


def sincos_frequencies(
    channels: int,
    base_extent: float,
    scale: Tensor,
    t: Tensor,
    cfg: DyPEConfig,
    theta: float = SINCOS_THETA,
) -> Tensor:
    """omega' [..., channels/2] of one sin-cos axis of `channels` channels, in the dtype of `scale`.

    base_extent: the trained image's extent on this axis in position units (tokens x position spacing);
    scale:       size ratio s of the current image to the trained one (<= 1 gives the plain omega exactly);
    t:           diffusion time (1 = noise).
    """
    check_channels(channels)
    inv_freq, _ = get_schedule(cfg.method)(channels, theta, base_extent, scale, t.to(scale.dtype), cfg)
    return inv_freq


def axis_sincos(
    positions: Tensor, plain: Tensor, omega: Tensor | None = None, centre: float = 0.0
) -> Tensor:
    """[sin, cos] of one axis: [n, 2F] in the dtype of `plain` [F] for positions [n]; [B, n, 2F] for omega
    [B, F] (one set of frequencies per sample).

    omega=None is the stock embedding, computed with the same operation as diffusers (an outer product of the
    positions and the frequencies) so that it reproduces its values bit for bit. Otherwise omega [..., F] acts on
    the offset from `centre` (see the module docstring).
    """
    if omega is None:
        angles = torch.outer(positions.reshape(-1), plain)
    else:
        offset = positions.reshape(-1).to(plain.dtype) - centre
        # the outer product offset x omega, written to broadcast over omega's leading (sample) dimensions
        angles = (plain * centre).unsqueeze(0) + offset.unsqueeze(-1) * omega.unsqueeze(-2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def grid_sincos(row_emb: Tensor, col_emb: Tensor) -> Tensor:
    """[..., h * w, 2C] row-major grid embedding from per-row [..., h, C] and per-column [..., w, C] embeddings
    (leading sample dimensions broadcast: one axis may be per sample and the other shared).

    Column channels come first, as in diffusers' get_2d_sincos_pos_embed.
    """
    h, w = row_emb.shape[-2], col_emb.shape[-2]
    lead = torch.broadcast_shapes(row_emb.shape[:-2], col_emb.shape[:-2])
    cols = col_emb.unsqueeze(-3).expand(*lead, h, w, -1)
    rows = row_emb.unsqueeze(-2).expand(*lead, h, w, -1)
    return torch.cat([cols, rows], dim=-1).reshape(*lead, h * w, -1)


def sincos_plain(channels: int, like: Tensor, theta: float = SINCOS_THETA) -> Tensor:
    """The stock omega [channels/2] in the dtype and device of `like`."""
    return plain_inv_freq(check_channels(channels), theta, like)


__all__ = ["SINCOS_THETA", "axis_sincos", "grid_sincos", "sincos_frequencies", "sincos_plain"]
