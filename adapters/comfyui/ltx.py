"""The replacement for the method of ComfyUI's LTX models that builds their video RoPE tables.

LTXV (comfy/ldm/lightricks/model.py) and LTXAV / LTX-2 (av_model.py) build their tables in
`_prepare_positional_embeddings(pixel_coords, frame_rate, x_dtype)`: every token's pixel coordinates [B, 3, S]
(or [B, 3, S, 2], the token's start and end; their midpoint where the model has `use_middle_indices_grid`), the
frame divided by the frame rate, are divided by `positional_embedding_max_pos` ([20, 2048, 2048]), and pair k of
axis a turns by (pi / 2) theta^(k / (n - 1)) (2 u_a - 1), n = inner_dim // 6 pairs per axis, one ladder for all
axes. The flat [B, S, inner_dim / 2] pairs hold (k, a) at pad + 3 k + a after `pad` leading identity pairs,
reshaped per head into rotation matrices [B, S, heads, D/2, 2, 2] ("interleaved" and "split" attention read the
same matrices; only the pad count is computed differently, and for an even inner dim it is the same).

That is LTX-Video's centred RoPE, which the diffusers row rewrites as standard RoPE (docs/families_passed.md):
`adapters.mechanisms.ltx.centred_pairs` gives DyPE's pairs of a rescaled axis, here and there. LTXV returns the
video tables `(matrices, split)`; LTXAV returns `[(video, video-for-cross), (audio, audio-for-cross)]`, and only
the video tables change: the audio positions (time only) and the cross-modal tables (frame axis only) keep the
method's numbers. The replacement calls the method and keeps its number on every pair DyPE does not move, so at
or below the base grid the tables are the model's own bit for bit. The tables carry a batch axis: one plan per
sample. At install the method is called on a small grid and must return this layout, else the patch is refused.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from dype_rope.rope import freq_dtype

from ..base import spans_on
from ..mechanisms.ltx import assemble, centred_pairs
from .call import CallState, call_in_flight
from .families import TIMES

# _prepare_positional_embeddings never passes the model's positional_embedding_theta on: _precompute_freqs_cis
# builds its ladder with its own default, 10000, whatever the configuration says
THETA = 10000.0


def ltx_layout(model: nn.Module) -> dict[str, Any]:
    """What the method's tables depend on, read from the model, with a clear error where it lacks them."""
    try:
        dim, heads = int(model.inner_dim), int(model.num_attention_heads)
        layout = dict(
            n=dim // 6, half=dim // 2, heads=heads, theta=THETA,
            max_pos=tuple(float(m) for m in model.positional_embedding_max_pos),
            middle=bool(model.use_middle_indices_grid), scale=tuple(float(s) for s in model.vae_scale_factors),
            patch=tuple(int(p) for p in model.patchifier.patch_size),
        )
    except (AttributeError, TypeError, ValueError) as err:
        raise TypeError(f"{type(model).__name__} is not an LTX model with centred pixel RoPE ({err})") from None
    if len(layout["max_pos"]) != 3 or layout["n"] < 2 or layout["half"] % heads:
        raise TypeError(f"{type(model).__name__}: max_pos {layout['max_pos']} / inner dim {dim} / {heads} heads is "
                        "not LTX's 3-axis video RoPE")
    return layout


def ltx(model: nn.Module) -> tuple[tuple[int, ...], float]:
    """((frame, row, col) channels of the standard form (docs/families_passed.md), 2n per axis; LTX's theta)."""
    n = ltx_layout(model)["n"]
    return (2 * n, 2 * n, 2 * n), THETA


def positions(pixel_coords: Tensor, middle: bool, dtype: torch.dtype) -> Tensor:
    """Each token's pixel coordinates [B, 3, S] as the model reads them: the midpoint of [start, end] where it
    uses the middle, else the start."""
    coords = pixel_coords.to(dtype)
    if coords.dim() == 4:
        coords = (coords[..., 0] + coords[..., 1]) / 2 if middle else coords[..., 0]
    return coords


class DyPELtxEmbed:
    """(pixel_coords, frame_rate, x_dtype) -> the method's tables, the video's rescaled pairs following DyPE."""

    def __init__(self, original, adapter, state: CallState, what: str, audio_video: bool) -> None:
        self.original = original
        self._adapter = adapter
        self._state = state
        self._what = what
        self._av = audio_video  # LTXAV: [video coords, audio coords] in, nested tables out
        self._layout = ltx_layout(adapter.model)
        self._probe()

    def __call__(self, pixel_coords, frame_rate, x_dtype, **kwargs: Any):
        out = self.original(pixel_coords, frame_rate, x_dtype, **kwargs)
        call = call_in_flight(self._state, self._what)
        if not call.axes:
            return out
        video = pixel_coords[0] if self._av else pixel_coords
        matrices, split = out[0][0] if self._av else out
        matrices = self._rescaled(matrices, video, call)
        if self._av:
            return [((matrices, split), out[0][1]), *out[1:]]
        return matrices, split

    def _rescaled(self, stock: Tensor, pixel_coords: Tensor, call) -> Tensor:
        lay, adapter = self._layout, self._adapter
        device = stock.device
        dtype = freq_dtype(device)
        t = TIMES[adapter.family.time](call.sigma.to(device=device, dtype=dtype).reshape(-1))  # one per sample
        t = torch.where((t >= 0) & (t <= 1), t, torch.full_like(t, math.nan))  # as ComfyAdapter.build_plan
        coords = positions(pixel_coords, lay["middle"], dtype)  # [B, 3, S]
        cos, sin, moved = [None, None, None], [None, None, None], [None, None, None]
        for a in call.axes:
            step_u = lay["scale"][a] * lay["patch"][a] / lay["max_pos"][a]  # one token's step in u
            scale = spans_on((call.scales[a],), dtype, device)
            cos[a], sin[a], hit = centred_pairs(coords[:, a] / lay["max_pos"][a], lay["n"], lay["theta"], scale, t,
                                                adapter.cfg, adapter.base_lens[a], step_u)
            moved[a] = hit.to(dtype)
        pad = 2 * (lay["half"] - 3 * lay["n"])  # assemble() counts channels, two per pair: keep every other one
        c, s = assemble(cos, pad, 1.0)[..., ::2], assemble(sin, pad, 0.0)[..., ::2]  # [B, S, D/2]
        mask = assemble(moved, pad, 0.0)[..., ::2] > 0  # [B, 1, D/2]
        ours = torch.stack([c, -s, s, c], dim=-1).reshape(*c.shape[:2], lay["heads"], -1, 2, 2)
        mask = mask.reshape(mask.shape[0], 1, lay["heads"], -1, 1, 1)
        return torch.where(mask, ours.to(stock.dtype), stock)

    def _probe(self) -> None:
        """The method on a 2 x 3 x 4 grid (pixel [start, end] coordinates at the model's VAE scale, 25 fps) must
        give LTX's centred RoPE in this layout."""
        lay = self._layout
        device = next(iter(self._adapter.model.parameters()), torch.zeros(())).device
        grid = torch.cartesian_prod(torch.arange(2), torch.arange(3), torch.arange(4)).T.to(device)  # [3, S]
        # integer pixel coordinates, as latent_to_pixel_coords gives them (the method scales the frame axis of a
        # float32 input in place)
        step = torch.tensor([int(s) for s in lay["scale"]], device=device).view(3, 1)
        start = grid * step
        video = torch.stack([start, start + step], dim=-1).unsqueeze(0)  # [1, 3, S, 2]
        u = positions(video, lay["middle"], torch.float64)[0]  # [3, S]
        coords = video.clone()
        if self._av:
            audio = torch.arange(4, dtype=torch.float32, device=device).view(1, 1, 4, 1) * 0.04
            coords = [coords, torch.cat([audio, audio + 0.04], dim=-1)]
        with torch.no_grad():
            out = self.original(coords, 25, torch.float32)
        try:
            matrices, split = out[0][0] if self._av else out
        except (TypeError, ValueError, IndexError):
            matrices = None
        u = u / torch.tensor(lay["max_pos"], dtype=torch.float64, device=device).view(3, 1)
        u[0] = u[0] / 25
        n = lay["n"]
        omega = math.pi / 2 * lay["theta"] ** (torch.arange(n, dtype=torch.float64, device=device) / (n - 1))
        angles = [(2 * u[a] - 1).unsqueeze(-1) * omega for a in range(3)]  # [S, n] each
        pad = 2 * (lay["half"] - 3 * n)
        c = assemble([x.cos() for x in angles], pad, 1.0)[..., ::2]
        s = assemble([x.sin() for x in angles], pad, 0.0)[..., ::2]
        want = torch.stack([c, -s, s, c], dim=-1).reshape(1, c.shape[0], lay["heads"], -1, 2, 2)
        atol = 1e-5 + 8 * math.pi / 2 * lay["theta"] * 2.0**-24  # float32 angles of up to (pi / 2) theta rad
        ok = isinstance(matrices, Tensor) and matrices.shape == want.shape
        if not ok or not torch.allclose(matrices.double(), want, rtol=0, atol=atol):
            raise TypeError(
                f"{self._what} does not return LTX's centred RoPE (theta {lay['theta']}, {n} pairs per axis by "
                f"axis, {lay['heads']} heads, max_pos {lay['max_pos']}); the row does not describe this model"
            )

    def __repr__(self) -> str:
        return f"DyPELtxEmbed({self._what})"


def replacement(original, adapter, state: CallState, what: str) -> DyPELtxEmbed:
    return DyPELtxEmbed(original, adapter, state, what, audio_video=adapter.family.method == "ltxav")


READERS = {"ltx": ltx, "ltxav": ltx}
REPLACEMENTS = {"ltx": replacement, "ltxav": replacement}
