"""Which models dype_rope patches: every transformer class of the installed diffusers (and ComfyUI's model
classes when ComfyUI is importable), each as

  supported   a row of the family table or a hand-written adapter patches it (detail: the row / adapter);
  refused     DyPE cannot rescale its encoding meaningfully (detail: why; `patch()` raises the same reason);
  no rope     its code has no rotary position encoding (UNets, absolute sin-cos tables, audio-only models):
              DyPE rescales RoPE, there is nothing to declare;
  unknown     it has a rotary encoding but no row: `patch()` refuses it (docs/families.md says how to declare it).

`dype-rope models` prints the report; `python -m dype_rope.coverage --readme` prints the README's
supported-models table, generated from the family table (`readme_table()`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
from typing import Any

STATUSES = ("supported", "refused", "no rope", "unknown")
# Packages of diffusers whose model classes may carry a position encoding of their own.
DIFFUSERS_PACKAGES = ("diffusers.models.transformers", "diffusers.models.controlnets")
# A rotary encoding somewhere in a model's module: the names diffusers' RoPE code uses.
ROTARY = re.compile(r"rotary|\brope\b|_rope_|freqs_cis|RoPE|Rope\w*\(", re.IGNORECASE)
BEGIN, END = "<!-- families:begin -->", "<!-- families:end -->"


def _entry(host: str, name: str, status: str, detail: str) -> dict[str, str]:
    return {"host": host, "class": name, "status": status, "detail": detail}


def _model_classes(package: str) -> list[tuple[type, str]]:
    """(class, its module's source) of every diffusers ModelMixin defined in a module of `package`."""
    try:
        from diffusers import ModelMixin

        pkg = importlib.import_module(package)
    except ImportError:
        return []
    found = []
    for info in pkgutil.iter_modules(pkg.__path__, package + "."):
        try:
            module = importlib.import_module(info.name)
            source = inspect.getsource(module)
        except Exception:  # a module whose optional dependency is missing cannot hold a usable model
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, ModelMixin) and cls is not ModelMixin:
                found.append((cls, source))
    return found


def classify(cls: type, source: str = "") -> tuple[str, str]:
    """(status, detail) of a model class; `source` is its module's code (for the no-rope / unknown split)."""
    from dype_rope.adapters import base
    from dype_rope.adapters.table import TableAdapter

    name = base.qualified_name(cls)
    if name in base._REFUSED:
        return "refused", base._REFUSED[name]
    for klass in cls.__mro__:
        adapter = base._BY_CLASS.get(klass) or base._BY_NAME.get(base.qualified_name(klass))
        if adapter is not None:
            if issubclass(adapter, TableAdapter):
                row = adapter.family
                return "supported", f"row {row.name!r} ({row.title or row.name}): {row.note}".rstrip(": ")
            return "supported", f"adapter {adapter.name!r}"
    try:
        own = inspect.getsource(cls)
    except (OSError, TypeError):
        own = ""
    for adapter in base._DETECTORS:
        # a detector matches instances by their stock encoding (FLUX's FluxPosEmbed): the class building one
        stock = getattr(adapter, "embed_cls", None)
        if stock is not None and re.search(rf"=\s*{stock.__name__}\(", own):
            return "supported", f"adapter {adapter.name!r} (its {stock.__name__})"
    if not ROTARY.search(source):
        return "no rope", (
            "no rotary position encoding in its code (an absolute table or none): DyPE rescales RoPE, and "
            "SD3's sin-cos table through its own adapter"
        )
    return "unknown", "a rotary encoding without a row of the family table (docs/families.md)"


def diffusers_coverage() -> list[dict[str, str]]:
    out = []
    for package in DIFFUSERS_PACKAGES:
        for cls, source in _model_classes(package):
            status, detail = classify(cls, source)
            out.append(_entry("diffusers", f"{cls.__module__}.{cls.__qualname__}", status, detail))
    return out


def import_comfyui(root: str) -> None:
    """Make the ComfyUI checkout at `root` importable, in CPU mode and without parsing this program's arguments
    (ComfyUI reads sys.argv on import otherwise)."""
    import os
    import sys

    if not os.path.isfile(os.path.join(root, "comfy", "model_base.py")):
        raise ValueError(f"{root} is not a ComfyUI checkout (no comfy/model_base.py in it)")
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True


def comfy_coverage() -> list[dict[str, str]]:
    """ComfyUI's model classes, where ComfyUI is importable (inside ComfyUI, or after import_comfyui); else none."""
    import importlib.util

    if importlib.util.find_spec("comfy") is None:
        return []
    from dype_rope.adapters.comfyui.coverage import comfy_coverage as comfy

    return list(comfy())


def coverage() -> list[dict[str, str]]:
    """Every model class of the installed hosts with its status and detail (see the module docstring)."""
    return diffusers_coverage() + comfy_coverage()


def format_report(entries: list[dict[str, Any]]) -> str:
    lines = []
    for status in STATUSES:
        group = [e for e in entries if e["status"] == status]
        lines.append(f"{status} ({len(group)})")
        lines += [f"  {e['host']:9} {e['class'].rsplit('.', 1)[-1]:44} {e['detail']}" for e in group]
    return "\n".join(lines)


# -- the README's supported-models table ----------------------------------------------------------------------


def _time(time) -> str:
    t = f"`{time.argument}`" if time.divide_by == 1 else f"`{time.argument} / {time.divide_by:g}`"
    if time.reverse:
        return f"1 - {t}"
    return f"{t} (sigma)" if time.divide_by == 1 else t


def _mechanism(mechanism) -> str:
    """A mechanism's own one-line description (`describe()`), else its type's name."""
    describe = getattr(mechanism, "describe", None)
    return describe() if callable(describe) else type(mechanism).__name__


def readme_table() -> str:
    """The markdown table of the library's family rows, generated from the family table (README.md holds it between the
    `<!-- families:begin -->` / `<!-- families:end -->` markers)."""
    from dype_rope.adapters.families import BUILTIN_FAMILIES as FAMILIES, BUILTIN_REFUSED as REFUSED

    lines = [
        "| family | model classes | RoPE module | mechanism | native grid | t |",
        "|---|---|---|---|---|---|",
    ]
    for row in FAMILIES:
        classes = ", ".join(f"`{c.rsplit('.', 1)[-1]}`" for c in row.classes)
        grid = " x ".join(str(g) for g in row.base_grid)
        px = " x ".join(str(g * row.pixels_per_token) for g in row.base_grid[-2:])
        lines.append(
            f"| {row.title or row.name} | {classes} | {f'`{row.module}`' if row.module else '-'} | "
            f"{_mechanism(row.mechanism)} | "
            f"{grid} ({px} px) | {_time(row.time)} |"
        )
    if REFUSED:
        lines += ["", "Refused, with the reason `patch()` gives:", ""]
        refused = sorted((name.rsplit(".", 1)[-1], why) for name, why in REFUSED.items())
        lines += [f"- `{name}`: {why}" for name, why in refused]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dype_rope.coverage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", action="store_true", help="print the README's supported-models table")
    args = parser.parse_args(argv)
    print(readme_table() if args.readme else format_report(coverage()), end="\n" if not args.readme else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
