"""The declarative family table: one row per model family, a few mechanisms that do the work.

Most DiTs compute their RoPE tables in one of a few ways: a module mapping position ids to tables (FLUX-style
EmbedND, `adapters/mechanisms/ids.py`), a module building tables from the latent's grid size (Wan-,
HunyuanVideo-style, `adapters/mechanisms/grid.py`), ... A family is then one :class:`Family` row: the model
classes (by qualified name, so no package is imported to match them), where the RoPE module sits, the mechanism
with its layout (output format, which axes are rows / columns / frames), the native grid, the pixels per token
and the time convention. :func:`register_family` turns a row into an adapter registered for its classes; rows
live in `adapters/families/`, one file per mechanism, and users declare their own the same way
(docs/adapters.md).

Models whose encoding cannot be rescaled meaningfully are rows of :data:`REFUSED` (class -> why):
`dype_rope.patch` raises that reason instead of patching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from .base import Adapter, refuse_classes, register_adapter


@dataclass(frozen=True)
class Time:
    """Where a family's diffusion time comes from: the forward argument `argument`, divided by `divide_by`
    (1 for sigma, 1000 for a 0 .. 1000 timestep), reversed where the model's time runs 0 = noise."""

    argument: str = "timestep"
    divide_by: float = 1.0
    reverse: bool = False


class Mechanism(Protocol):
    """How one kind of RoPE module is replaced: `install(adapter)` swaps the module at `adapter.family.module`
    for one that follows DyPE and registers its undo steps with `adapter.on_remove`."""

    def install(self, adapter: "TableAdapter") -> None: ...


@dataclass(frozen=True)
class Family:
    name: str  # adapter name, e.g. "flux3"
    classes: tuple[str, ...]  # qualified names of the model classes ("package.module.Class")
    module: str  # attribute path of the RoPE module under the model, e.g. "pos_embed"
    mechanism: Mechanism  # the mechanism with this family's layout
    base_grid: tuple[int, ...]  # native training grid in tokens: (rows, cols)
    pixels_per_token: int = 16  # VAE downscale x patch size
    time: Time = Time()
    rescaled_axes: tuple[int, ...] = (1, 2)  # the mechanism's axes of (rows, cols) that base_grid describes
    title: str = ""  # the family as users know it, for docs ("FLUX.3")
    note: str = ""  # one line for the supported-models table
    # a video's frames axis of the mechanism: rescaled too when base_grid names a frame count (frames, rows, cols)
    temporal_axis: int | None = None


class TableAdapter(Adapter):
    """The adapter of one table row; :func:`register_family` subclasses it per row."""

    family: Family

    def __init__(self, model, cfg, base_grid, *args, **kwargs) -> None:
        spatial = tuple(self.family.rescaled_axes)
        frames = self.family.temporal_axis
        if frames is not None and base_grid is not None and len(tuple(base_grid)) == len(spatial) + 1:
            self.rescaled_axes = (frames, *spatial)  # this instance's: the class stays spatial
        super().__init__(model, cfg, base_grid, *args, **kwargs)

    def axis_scales(self, spans):
        """As Adapter.axis_scales; with a rescaled frames axis, "isotropic" shares the largest ratio between rows
        and columns only: frames are another kind of extent and keep their own (as adapters/video.py)."""
        temporal = self.family.temporal_axis
        if temporal is None or temporal not in self.rescaled_axes:
            return super().axis_scales(spans)
        ratios = {a: spans[a] / base for a, base in zip(self.rescaled_axes, self.base_grid)}
        if self.aspect == "isotropic":
            largest = torch.stack([r for a, r in ratios.items() if a != temporal]).amax()
            ratios = {a: r if a == temporal else largest for a, r in ratios.items()}
        one = torch.ones((), dtype=spans.dtype, device=spans.device)
        return torch.stack([ratios.get(a, one) for a in range(spans.shape[0])])

    def default_base_grid(self) -> tuple[int, ...]:
        return self.family.base_grid

    def install(self) -> None:
        self.family.mechanism.install(self)


FAMILIES: list[Family] = []  # every registered row, in registration order
REFUSED: dict[str, str] = {}  # qualified class name -> why DyPE cannot rescale it


def register_family(row: Family) -> type[TableAdapter]:
    """Declare a family: its row becomes an adapter registered for `row.classes` (docs/adapters.md)."""
    if not isinstance(row, Family):
        raise TypeError(f"register_family takes a dype_rope.adapters.table.Family row, got {type(row).__name__}")
    if any(f.name == row.name for f in FAMILIES):
        raise ValueError(f"a family named {row.name!r} is already registered")
    bad = [c for c in row.classes if not (isinstance(c, str) and "." in c)]
    if not row.classes or bad:
        raise ValueError(f"Family.classes are qualified names 'package.module.Class', got {list(row.classes)}")
    cls = type(f"{row.name.title().replace('_', '').replace('-', '')}Adapter", (TableAdapter,), {})
    cls.family = row
    cls.name = row.name
    cls.rescaled_axes = tuple(row.rescaled_axes)
    cls.pixels_per_token = row.pixels_per_token
    cls.__doc__ = f"{row.title or row.name}: {row.note}" if row.note else (row.title or row.name)
    register_adapter(*row.classes)(cls)
    FAMILIES.append(row)
    return cls


def refuse(classes: Sequence[str], reason: str) -> None:
    """Declare model classes DyPE cannot rescale, with the reason `patch()` gives."""
    for name in classes:
        REFUSED[name] = reason
    refuse_classes(classes, reason)
