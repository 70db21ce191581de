"""Models the family table does not know, whose RoPE module is ids-style (it carries `theta` and `axes_dim`):
`dype_rope.patch` refuses them with the module it found, the table format its probe recognised, and the one
`register_family` row that would patch them (docs/families.md), instead of patching nothing or guessing.

Registered as the last detector, so that every adapter matched by class, name or its own detector comes first.
"""

from __future__ import annotations

import inspect

from torch import nn

from ..base import Adapter, qualified_name, register_adapter
from .ids import FORMATS, Ids, probe

IMAGE_IDS_ARGUMENTS = ("img_ids", "image_ids", "x_ids", "position_ids", "ids")
TIME_ARGUMENTS = ("timestep", "timesteps", "t", "sigma", "sigmas")


def ids_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Submodules (not the model itself) that look like an ids-style RoPE module: `theta` and `axes_dim`."""
    return [(name, m) for name, m in model.named_modules() if name and hasattr(m, "theta") and hasattr(m, "axes_dim")]


def recognised_format(module: nn.Module) -> Ids | None:
    """The first declared layout (format, ids rank) whose probe the module passes, or None."""
    try:
        axes_dims = [int(d) for d in module.axes_dim]
        theta = float(module.theta)
    except (TypeError, ValueError):
        return None
    for rank in (2, 3):
        for fmt in FORMATS:
            spec = Ids(fmt, ids_rank=rank)
            try:
                probe(spec, module, axes_dims, theta)
            except (TypeError, ValueError, RuntimeError):
                continue
            return spec
    return None


def suggested_row(model: nn.Module, path: str, spec: Ids | None) -> str:
    params = inspect.signature(model.forward).parameters
    time = next((n for n in TIME_ARGUMENTS if n in params), "<the timestep argument>")
    image_ids = next((n for n in IMAGE_IDS_ARGUMENTS if n in params), None)
    fmt = spec.format if spec is not None else "<one of " + ", ".join(FORMATS) + ">"
    rank = f", ids_rank={spec.ids_rank}" if spec is not None and spec.ids_rank != 2 else ""
    return (
        "dype_rope.register_family(dype_rope.Family(\n"
        f"    name='my-model', classes=('{qualified_name(type(model))}',), module='{path}',\n"
        f"    mechanism=dype_rope.Ids('{fmt}', image_ids={image_ids!r}{rank}),\n"
        "    base_grid=(<rows>, <cols>),  # the native training grid in tokens\n"
        f"    time=dype_rope.Time('{time}', divide_by=<1 for sigma, 1000 for a 0..1000 timestep>),\n"
        "))"
    )


def unknown_message(model: nn.Module) -> str:
    found = ids_modules(model)
    lines = []
    for path, module in found:
        spec = recognised_format(module)
        what = f"format '{spec.format}'" if spec is not None else "a table format the probe does not recognise"
        lines.append(
            f"  {path}: {type(module).__name__}(theta={module.theta}, axes_dim={list(module.axes_dim)}), {what}"
        )
    path, module = found[0]
    return (
        f"dype_rope has no adapter for {type(model).__name__}: no row of the family table lists "
        f"{qualified_name(type(model))}, but it has an ids-style RoPE module (the ids mechanism):\n"
        + "\n".join(lines)
        + "\nDeclare its family with one row (docs/families.md), then patch again:\n"
        + suggested_row(model, path, recognised_format(module))
    )


@register_adapter(detect=True)
class UnknownIdsModel(Adapter):
    """Matches models with an ids-style RoPE module but no row, only to refuse them with the row to declare."""

    name = "unknown-ids"

    @classmethod
    def detects(cls, model: nn.Module) -> bool:
        return bool(ids_modules(model))

    def __init__(self, model: nn.Module, *args, **kwargs) -> None:
        raise TypeError(unknown_message(model))


__all__ = ["UnknownIdsModel", "ids_modules", "recognised_format", "unknown_message"]
