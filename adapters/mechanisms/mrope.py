"""Mechanism for interleaved multimodal RoPE (Qwen3-VL style MRoPE, Cosmos 3's Cosmos3VLTextRotaryEmbedding).

The module maps position ids [3, B, N] (frame / text index, row, column of every token of a joint text + vision
sequence) to (cos, sin) [B, N, D] in the rotate-half layout (pair j on channels j and j + D/2). Its pairs share one
frequency ladder omega_j = theta^(-2j / D), j = 0 .. D/2 - 1, and take their position from an axis chosen by
j mod 3: rows where j % 3 == 1 and j < 3 s_rows, columns where j % 3 == 2 and j < 3 s_cols, the frame / text
index elsewhere (s = the module's `rope_axes_dim`, mrope_section).

The n = s_rows pairs of the rows, k = 0 .. n-1 at j = 3k + 1, turn by theta^(-2/D) theta^(-6k/D): standard RoPE
with base theta^(6n/D) on 2n channels over positions c p, c = theta^(-2/D) (columns: j = 3k + 2, c = theta^(-4/D)).
DyPE's schedules act on that form, YaRN's base length L the base grid in tokens times c. Rows and columns must have
as many pairs (one shared base), as Cosmos 3's [24, 20, 20] has; another split is refused at install.

The stock module is called and every pair DyPE does not move keeps its number (torch.where on the device), so at
or below the base grid the tables are the module's own bit for bit; frame / text pairs are never moved. Text
tokens sit on every axis at their index, so the moved pairs turn them by DyPE's frequencies too: rows and columns
keep one frequency per pair for every token. Moved pairs take DyPE's angles in float64 where the device has it.
The scale comes from the generated video's patch grid (the model's `vision_token_shapes`, host integers), never
from text or conditioning; the tables carry no per-sample plan (the pipeline packs one sample per call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dype_rope.rope import build_plan, freq_dtype, plain_plan
from dype_rope.timestep import diffusion_time

from ..base import argument_reader, qualified_name, spans_on
from ..parallel import swap_module


def mrope_axes(half: int, sections) -> list[int]:
    """The axis (0 frame / text, 1 rows, 2 columns) of every pair j < half, as apply_interleaved_mrope picks it."""
    axes = []
    for j in range(half):
        a = j % 3
        axes.append(a if a and j < 3 * int(sections[a]) else 0)
    return axes


@dataclass(frozen=True)
class InterleavedMRope:
    """An interleaved-MRoPE module at `Family.module`: forward(position_ids, device, dtype) -> (cos, sin).

    stock:  qualified class name of the module (another is refused);
    theta:  the model config's field holding the RoPE base (the module keeps only its inv_freq);
    shapes: the model's forward argument listing the vision items' patch grids (frames, rows, columns); the first
            is the video being generated."""

    stock: str
    theta: str = "rope_theta"
    shapes: str = "vision_token_shapes"
    time_scale: str = "timestep_scale"  # the config field the model multiplies its timestep argument by

    def describe(self) -> str:
        return "interleaved MRoPE, (cos, sin) halves"

    def install(self, adapter) -> None:
        model, family = adapter.model, adapter.family
        original = getattr(model, family.module, None)
        if original is None or isinstance(original, DyPEMRope):
            raise RuntimeError(f"{type(model).__name__}.{family.module} is missing or already a DyPE embedding")
        if qualified_name(type(original)) != self.stock:
            raise TypeError(
                f"{type(model).__name__}.{family.module} is {qualified_name(type(original))}, not {self.stock} "
                f"that the {family.name} row describes"
            )
        config = model.config
        scale = float(getattr(config, self.time_scale))
        if not math.isclose(scale * family.time.divide_by, 1.0, rel_tol=1e-9):
            raise TypeError(
                f"{type(model).__name__}.config.{self.time_scale} = {scale}: the {family.name} row reads t as the "
                f"timestep / {family.time.divide_by:g}"
            )
        theta, sections = float(getattr(config, self.theta)), tuple(int(s) for s in original.rope_axes_dim)
        half = int(original.inv_freq.shape[0])
        dim = 2 * half
        n = sections[1]
        if sections[2] != n or n < 2:
            raise TypeError(f"mrope sections {list(sections)}: rows and columns need the same pair count (>= 2)")
        probe(original, theta, sections)
        base_theta = theta ** (6 * n / dim)
        steps = (theta ** (-2 / dim), theta ** (-4 / dim))  # c of rows and columns: positions c p
        base_lens = tuple(b * c for b, c in zip(adapter.base_grid, steps))
        read_t = argument_reader(model.forward, family.time.argument)
        read_shapes = argument_reader(model.forward, self.shapes)
        divide_by, reverse = family.time.divide_by, family.time.reverse

        def begin(args: tuple, kwargs: dict) -> None:
            step = adapter.step
            step.clear()
            step.timestep = read_t(args, kwargs)
            shapes = read_shapes(args, kwargs)
            step.grid = tuple(int(s) for s in shapes[0]) if shapes else None  # host integers of the call

        def rescaled(position_ids: Tensor, stock: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            step = adapter.step
            if step.timestep is None:
                raise adapter.outside_forward()
            if step.grid is None:
                raise ValueError(f"{type(model).__name__} was called without {self.shapes!r}")
            cos, sin = stock
            device = cos.device
            dtype = freq_dtype(device)
            timestep = step.timestep
            if isinstance(timestep, Tensor) and timestep.dim():
                timestep = timestep.amax()  # per-token times: the generated tokens' noise level
            t = diffusion_time(timestep, divide_by=divide_by, reverse=reverse, dtype=dtype, device=device)
            spans = spans_on(step.grid, dtype, device)  # (frames, rows, columns) of the generated video
            scales = adapter.axis_scales(spans)
            step.t, step.scales = t, scales
            plan = build_plan((2 * n, 2 * n), base_theta, scales[1:3], t, adapter.cfg, base_lens)
            plain = plain_plan((2 * n, 2 * n), base_theta, device=device, dtype=dtype)
            moved = (plan.inv_freq != plain.inv_freq) | (plan.mscale != 1)  # [2n]: rows' pairs, then columns'
            ids = position_ids if position_ids.dim() == 3 else position_ids.unsqueeze(0).expand(3, -1, -1)
            ids = ids.to(dtype)  # [3, B, N]
            rows, cols = ids[1].unsqueeze(-1) * steps[0], ids[2].unsqueeze(-1) * steps[1]
            angles = torch.cat([rows * plan.inv_freq[:n], cols * plan.inv_freq[n:]], dim=-1)  # [B, N, 2n]
            k = torch.arange(n, device=device)
            slots = torch.cat([3 * k + 1, 3 * k + 2])  # the module's pair of every planned pair
            new_cos = torch.zeros(*angles.shape[:-1], half, dtype=dtype, device=device)
            new_cos = new_cos.index_copy(-1, slots, angles.cos() * plan.mscale)
            new_sin = torch.zeros_like(new_cos).index_copy(-1, slots, angles.sin() * plan.mscale)
            mask = torch.zeros(half, dtype=torch.bool, device=device).index_copy(0, slots, moved)
            mask = torch.cat([mask, mask])  # rotate-half: pair j on channels j and j + D/2
            return (
                torch.where(mask, torch.cat([new_cos, new_cos], -1).to(cos.dtype), cos),
                torch.where(mask, torch.cat([new_sin, new_sin], -1).to(sin.dtype), sin),
            )

        swap_module(adapter, family.module, DyPEMRope(original, rescaled))
        adapter.hook_calls(begin)


def probe(module: nn.Module, theta: float, sections) -> None:
    """The stock module on a few text tokens and a 2 x 3 x 4 grid must give this layout (float32 angles of
    positions below 30: a few units of their last place)."""
    device = module.inv_freq.device
    half = int(module.inv_freq.shape[0])
    text = torch.arange(3.0).expand(3, -1)
    grid = torch.stack(torch.meshgrid(torch.arange(2.0), torch.arange(3.0), torch.arange(4.0), indexing="ij"))
    ids = torch.cat([text, grid.reshape(3, -1) + torch.tensor([[3.0], [0.0], [0.0]])], dim=1).to(device)
    with torch.no_grad():
        out = module(ids.unsqueeze(1), device, torch.float32)
    axes = torch.tensor(mrope_axes(half, sections), device=device)
    omega = theta ** (-2 * torch.arange(half, dtype=torch.float64, device=device) / (2 * half))
    angles = ids.double()[axes].T * omega  # [N, half]: pair j at its axis's position
    want = [torch.cat([f, f], -1) for f in (angles.cos(), angles.sin())]
    ok = isinstance(out, tuple) and len(out) == 2 and all(o.shape == (1, *w.shape) for o, w in zip(out, want))
    if not ok or not all(torch.allclose(o[0].double(), w, rtol=0, atol=1e-5) for o, w in zip(out, want)):
        raise TypeError(
            f"{type(module).__name__} does not return (cos, sin) [B, N, D] of interleaved MRoPE with theta {theta} "
            f"and sections {list(sections)} in halves; this row does not describe the module"
        )


class DyPEMRope(nn.Module):
    """Drop-in for the stock module: calls it, then gives DyPE's numbers to the pairs DyPE moves."""

    def __init__(self, original: nn.Module, rescaled) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a submodule: the module tree stays as it was
        self.rope_axes_dim = original.rope_axes_dim
        self._rescaled = rescaled

    @property
    def inv_freq(self) -> Tensor:
        return self.original.inv_freq

    def _apply(self, fn, recurse=True):
        self.original._apply(fn, recurse)  # model.to() reaches the stock module's inv_freq
        return super()._apply(fn, recurse)

    def forward(self, position_ids: Tensor, device, dtype):
        stock = type(self.original).forward(self.original, position_ids, device, dtype)
        return self._rescaled(position_ids, stock)
