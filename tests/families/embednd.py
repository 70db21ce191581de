"""Generic adapters: a BFL / ComfyUI-style DiT on `EmbedND` (rotation matrices [B, 1, L, D/2, 2, 2]), found by
name or pointed at with patch(model, module=...), and the adapter docs/adapters.md writes for your own DiT."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import dype_rope

from .row import Family, RopeLayout, Sampler, flow_match, matrix_pairs
from .tiny import grid_ids

TEXT = 4


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
    return (pe * pairs.unsqueeze(-2)).sum(-1).flatten(-2).type_as(x)


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


def image_ids(grid, cond=None) -> torch.Tensor:
    ids = grid_ids(*grid).float()
    return ids if cond is None else torch.cat([ids, grid_ids(*cond, 1).float()])  # a reference image on frame 1


def embednd_inputs(grid, batch=1, cond=None, seed=1, text_len=TEXT):
    g = torch.Generator().manual_seed(seed)
    ids = image_ids(grid, cond)
    return dict(
        img=torch.randn(batch, len(ids), 8, generator=g),
        img_ids=ids.expand(batch, -1, -1),
        txt=torch.randn(batch, text_len, 8, generator=g),
        txt_ids=torch.zeros(batch, text_len, 3),
    )


def _image_sampler():
    config = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, max_image_seq_len=4096)
    return flow_match(config, 4096)


EMBEDND = Family(
    name="embednd",
    adapter="embednd",
    build=tiny_embednd,
    make_inputs=lambda grid, batch, cond, seed: embednd_inputs(grid, batch, cond, seed),
    time_arg="timesteps",
    pipeline_time=lambda ts: ts / 1000,  # BFL's sampler passes sigma = timestep / 1000
    encoding="pe_embedder",
    layout=RopeLayout(
        axes=(8, 12, 12),
        theta=10000.0,
        tables=lambda out: [matrix_pairs(out[0, 0])],
        positions=lambda grid, cond, calls: [torch.cat([torch.zeros(TEXT, 3), image_ids(grid, cond)]).double()],
        dtype=torch.float32,
    ),
    base=(4, 6),
    below=(((4, 6), (4, 6)), ((3, 5), (4, 6))),
    above=(8, 9),
    default_base=(64, 64),
    samplers=(Sampler("flow-match-euler", _image_sampler),),
    output=lambda out: out,
    cond=(10, 4),  # larger than the generated image on the row axis
)


# -- the adapter docs/adapters.md writes for your own DiT ------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"
MY_AXES, MY_THETA = (8, 12, 12), 10000.0


class HalfRope(nn.Module):
    """Stock encoding of the example model: (cos, sin) [L, D] in the "half" layout, angles in float64."""

    def __init__(self, theta: float, axes_dim: list[int]) -> None:
        super().__init__()
        self.theta, self.axes_dim = theta, axes_dim

    def forward(self, ids):
        angles = torch.cat(
            [
                ids[:, a : a + 1].double() / self.theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
                for a, d in enumerate(self.axes_dim)
            ],
            dim=-1,
        )
        return torch.cat([angles.cos()] * 2, -1).float(), torch.cat([angles.sin()] * 2, -1).float()


class MyDiT(nn.Module):
    """forward(x [B, L, C], ids [L, 3], timestep [B] in [0, 1], 1 = noise): one attention layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.qkv, self.out = nn.Linear(4, 64), nn.Linear(64, 192), nn.Linear(64, 4)
        self.rope = HalfRope(MY_THETA, list(MY_AXES))

    def forward(self, x, ids, timestep):
        h = self.inp(x) + timestep[:, None, None]
        q, k, v = self.qkv(h).unflatten(-1, (3, 2, 32)).permute(2, 0, 3, 1, 4)
        cos, sin = self.rope(ids)
        q, k = (dype_rope.apply_rope(z, cos, sin, "half", sequence_dim=2) for z in (q, k))
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


def doc_example() -> str:
    text = DOC.read_text()
    marker = text.index("tests/test_adapter_custom.py")
    return re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)


_DOC_ADAPTER: list[type] = []


def documented_adapter() -> type:
    """The adapter class the documented example defines and registers (run once, as written)."""
    if not _DOC_ADAPTER:
        namespace = {"MyDiT": MyDiT}
        exec(compile(doc_example(), str(DOC), "exec"), namespace)
        _DOC_ADAPTER.append(namespace["MyDiTAdapter"])
    return _DOC_ADAPTER[0]


def my_dit() -> MyDiT:
    documented_adapter()
    return MyDiT()


def my_dit_inputs(grid, batch=1, cond=None, seed=1):
    ids = grid_ids(*grid).float()
    return dict(x=torch.randn(batch, len(ids), 4, generator=torch.Generator().manual_seed(seed)), ids=ids)


def half_pairs(out) -> list[torch.Tensor]:
    cos, sin = out
    half = cos.shape[-1] // 2
    assert torch.equal(cos[:, :half], cos[:, half:]) and torch.equal(sin[:, :half], sin[:, half:])
    return [torch.stack([cos[:, :half], sin[:, :half]], -1).double()]


CUSTOM = Family(
    name="my-dit",
    adapter="my-dit",
    build=my_dit,
    make_inputs=lambda grid, batch, cond, seed: my_dit_inputs(grid, batch, cond, seed),
    time_arg="timestep",
    pipeline_time=lambda ts: ts / 1000,
    encoding="rope",
    layout=RopeLayout(
        axes=MY_AXES,
        theta=MY_THETA,
        tables=half_pairs,
        positions=lambda grid, cond, calls: [grid_ids(*grid).double()],
        dtype=torch.float32,
    ),
    base=(4, 6),
    below=(((4, 6), (4, 6)), ((2, 6), (4, 6))),
    above=(8, 9),
    default_base=(64, 64),
    samplers=(Sampler("flow-match-euler", _image_sampler),),
    output=lambda out: out,
)
