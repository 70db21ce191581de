"""DyPE for ComfyUI's Ideogram 4 (`comfy.ldm.ideogram4.model.Ideogram4Transformer2DModel`).

The model has no rotary module to replace. `_backbone(llm_features, x, t, position_ids, attn_mask, indicator,
...)` builds its interleaved (t, h, w) multimodal RoPE with a module-level function of ComfyUI's text encoders
(shared by every model in the process: DyPE never rebinds it) from `position_ids[0]` ([L, 3], one table for the
whole batch) and hands the rotation matrices [1, L, 1, D/2, 2, 2] (pair j at channels j and j + D/2) to every block
as its `freqs_cis` argument. So two instance attributes are replaced, each wrapping the stock callable:

- `_backbone`: records the call's position ids (thread-local, for the duration of the call), then runs the stock
  method unchanged;
- `layers.N.forward`: swaps the `freqs_cis` argument for DyPE's tables, then runs the stock block.

The DyPE tables are the stock tables with the pairs of every axis rescaled in this call replaced: pair j reads h
where j % 3 == 1 and j < 3 n_h, w where j % 3 == 2 and j < 3 n_w, the caption / frame index t elsewhere; the pairs of
axis a are standard RoPE on 2 n_a channels with theta_a = base^(6 n_a / D) over positions c_a p, c_a =
base^(-2a / D) (docs/families.md, "Ideogram 4"), and DyPE's schedules act on that form. Every other pair keeps the
stock number bit for bit (torch.where on the device), so at or below the base grid nothing changes at all.

The scale comes from the latent's token grid (ComfyAdapter.start_call), never from the ids: caption tokens
(positions 0 .. L_text - 1 on every axis) cannot set it. The time is the sampler's sigma (1 = noise; the model
itself runs on 1 - sigma). The tables carry no batch axis, so one plan serves the call: a batch of different
sigmas is refused on the host where reading it is free, and gets NaN rescaled pairs on the device otherwise.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable

import torch
from torch import Tensor, nn

from dype_rope.rope import build_plan, check_axes_dims, freq_dtype
from dype_rope.timestep import MIXED_TIMES, host_readable

from ..base import Adapter
from ..mechanisms.mrope import axis_pairs, standard_form
from .adapter import ComfyAdapter
from .call import CallState, ComfyCall, call_in_flight
from .families import TIMES

SPATIAL = (1, 2)  # (h, w): the id axes, also each one's offset in the interleaving
FREQS_ARG = 2  # Ideogram4TransformerBlock.forward(x, attn_mask, freqs_cis, adaln_input, transformer_options)
POSITIONS_ARG = 3  # Ideogram4Transformer._backbone(llm_features, x, t, position_ids, attn_mask, indicator, ...)


def sections_of(model: nn.Module) -> tuple[int, tuple[int, int, int], float]:
    """(head_dim, mrope_section, rope_theta) of the model, with a clear error where they do not fit a head."""
    what = type(model).__name__
    try:
        head_dim = int(model.head_dim)
        sections = tuple(int(s) for s in model.mrope_section)
        base = float(model.rope_theta)
    except (AttributeError, TypeError, ValueError) as err:
        raise TypeError(f"{what} has no head_dim / mrope_section / rope_theta (Ideogram 4's RoPE): {err}") from None
    half = head_dim // 2
    if len(sections) != 3 or head_dim % 2 or head_dim <= 0 or not base > 1:
        raise TypeError(f"{what}: expected 3 sections (t, h, w), an even head_dim and a base > 1, got "
                        f"{sections}, {head_dim}, {base}")
    if min(sections[1:]) < 1 or any(3 * sections[a] - 3 + a >= half for a in SPATIAL):
        raise TypeError(f"{what}: sections {sections} do not fit the {half} pairs of the head interleaved by 3")
    return head_dim, sections, base


class _Backbone:
    """`_backbone` with the call's position ids recorded for the blocks (a plain callable: the tree is unchanged)."""

    def __init__(self, original: Callable, calls: "_Calls") -> None:
        self.original = original
        self._calls = calls

    def __call__(self, *args: Any, **kwargs: Any):
        positions = args[POSITIONS_ARG] if len(args) > POSITIONS_ARG else kwargs.get("position_ids")
        if not isinstance(positions, Tensor) or positions.dim() != 3 or positions.shape[-1] != 3:
            raise TypeError(f"Ideogram 4's _backbone got position ids {getattr(positions, 'shape', positions)}; "
                            "DyPE expects [B, L, 3] (t, h, w)")
        previous = self._calls.frame
        self._calls.frame = {"positions": positions[0], "stock": None, "ours": None}  # the model uses [0] too
        try:
            return self.original(*args, **kwargs)
        finally:
            self._calls.frame = previous

    def __repr__(self) -> str:
        return "DyPE Ideogram 4 _backbone"


class _Block:
    """A block's `forward` with its `freqs_cis` argument replaced by DyPE's tables."""

    def __init__(self, original: Callable, tables: Callable[[Tensor], Tensor]) -> None:
        self.original = original
        self._tables = tables

    def __call__(self, *args: Any, **kwargs: Any):
        if len(args) > FREQS_ARG:
            args = (*args[:FREQS_ARG], self._tables(args[FREQS_ARG]), *args[FREQS_ARG + 1:])
        elif "freqs_cis" in kwargs:
            kwargs["freqs_cis"] = self._tables(kwargs["freqs_cis"])
        else:
            raise TypeError("an Ideogram 4 block was called without freqs_cis")
        return self.original(*args, **kwargs)

    def __repr__(self) -> str:
        return "DyPE Ideogram 4 block"


class _Calls(threading.local):
    """The backbone call in flight on this thread: its positions and the tables built for it."""

    def __init__(self) -> None:
        self.frame: dict | None = None


def _unwrap(obj: Any) -> Any:
    """The stock callable under a DyPE wrapper another DyPE node left on the live model."""
    while isinstance(obj, (_Backbone, _Block)):
        obj = obj.original
    return obj


class Ideogram4Adapter(ComfyAdapter):
    """The ComfyUI row "ideogram4": object patches on `_backbone` and every block's forward."""

    def __init__(self, model, cfg, base_grid, aspect="per-axis", backend="torch", module=None, *, stock=None):
        if module is not None:
            raise ValueError(f"the {self.name} adapter finds its embedders itself; drop module=")
        Adapter.__init__(self, model, cfg, base_grid, aspect, backend, module)
        self.state = CallState()
        self._calls = _Calls()
        self.patch_hw = (1, 1)  # one token per latent pixel (128 channels = 2 x 2 x 32 already folded)
        head_dim, sections, self.theta = sections_of(model)
        self.pairs = axis_pairs(head_dim, sections)
        self.forms = {a: standard_form(self.theta, head_dim, len(self.pairs[a]), a) for a in SPATIAL}
        self.axes_dims = check_axes_dims([2 * len(self.pairs[a]) for a in (0, 1, 2)])
        backbone = (stock or {}).get("_backbone") or getattr(model, "_backbone", None)
        if not callable(backbone) or not isinstance(getattr(model, "layers", None), nn.ModuleList):
            raise TypeError(f"{type(model).__name__} has no _backbone method and layers list (Ideogram 4's layout)")
        self.stock = {"_backbone": _unwrap(backbone)}
        for i, block in enumerate(model.layers):
            self.stock[f"layers.{i}.forward"] = _unwrap(block.forward)
        self.base_extent = [float(n) for n in self.base_grid]
        self.base_lens = (1.0, *self.base_extent)

    def start_call(self, x: Tensor, sigma: Any, transformer_options: dict | None, latent_shapes=None) -> ComfyCall:
        call = super().start_call(x, sigma, transformer_options, latent_shapes)
        s = call.sigma
        if call.axes and host_readable(s) and s.numel() > 1 and bool((s != s[0]).any()):
            raise ValueError(MIXED_TIMES)
        return call

    def tables(self, stock: Tensor) -> Tensor:
        """DyPE's rotation matrices [1, L, 1, D/2, 2, 2] from the stock ones the backbone hands its blocks."""
        call = call_in_flight(self.state, f"{type(self.model).__name__}.layers")
        if not call.axes:  # nothing larger than the base grid (host fact, from the latent's shape)
            return stock
        frame = self._calls.frame
        if frame is None:
            raise RuntimeError("an Ideogram 4 block was called outside _backbone; DyPE reads its position ids there")
        if frame["stock"] is stock:  # every block gets the same tables: build once per backbone call
            return frame["ours"]
        ours = self._rescaled(frame["positions"], stock, call)
        frame["stock"], frame["ours"] = stock, ours
        return ours

    def _rescaled(self, positions: Tensor, stock: Tensor, call: ComfyCall) -> Tensor:
        device = stock.device
        dtype = freq_dtype(device)
        pos = positions.to(dtype)  # whole numbers below 2^24 (65536 + row): exact in either dtype
        sigma = call.sigma.to(device=device, dtype=dtype).reshape(-1)
        t = TIMES[self.family.time](sigma)
        # the tables have no batch axis: one time for the call; a mixed batch (or a time outside [0, 1]) gets NaN
        # on its rescaled pairs, decided on the device
        t0 = t[:1]
        ok = (t == t0).all() & (t0 >= 0) & (t0 <= 1)
        t0 = torch.where(ok, t0, torch.full_like(t0, math.nan))
        half = stock.shape[-3]
        ours = torch.zeros(pos.shape[0], half, 2, 2, dtype=dtype, device=device)
        keep = torch.ones(half, dtype=torch.bool, device=device)
        for a in call.axes:
            n, (theta_a, c_a) = len(self.pairs[a]), self.forms[a]
            scales = torch.tensor([[call.scales[a]]], dtype=dtype, device=device)
            plan = build_plan((2 * n,), theta_a, scales, t0, self.cfg, (self.base_lens[a] * c_a,))
            angle = pos[:, a, None] * (plan.inv_freq[0] * c_a)  # [L, n]
            m = plan.mscale[0]
            cos, sin = angle.cos() * m, angle.sin() * m
            block = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # [L, n, 2, 2]
            index = torch.tensor(self.pairs[a], device=device)
            ours = ours.index_copy(1, index, block)
            keep = keep.index_fill(0, index, False)
        ours = ours.reshape(stock.shape).to(stock.dtype)
        return torch.where(keep.view(half, 1, 1), stock, ours)

    # -- the replaced callables ------------------------------------------------------------------------------
    def embedders(self) -> dict[str, Callable]:
        """Attribute path -> the replacement there: `_backbone` and every block's `forward`."""
        out: dict[str, Callable] = {"_backbone": _Backbone(self.stock["_backbone"], self._calls)}
        for path, original in self.stock.items():
            if path != "_backbone":
                out[path] = _Block(original, self.tables)
        return out

    def install(self) -> None:
        # each replacement shadows a method of the class as an instance attribute, undone by ComfyAdapter.install
        # (method rows); a DyPE wrapper already there means this instance is patched already
        for path in self.embedders():
            parent, _, attr = path.rpartition(".")
            if isinstance(vars(self.model.get_submodule(parent)).get(attr), (_Backbone, _Block)):
                raise RuntimeError(f"{type(self.model).__name__}.{path} is already a DyPE replacement")
        super().install()
