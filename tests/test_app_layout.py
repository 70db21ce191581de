"""The command-line app sits on top of the library: nothing in the core imports dype_rope.app, and no import
in the app (at module level or inside a function) closes a circle. Read from the source with ast, so that
lazy imports count too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dype_rope"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of this package that `name` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from . import demo`
        else:
            continue
        found |= {t for t in targets if t in known}
    return found - {name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_the_core_never_imports_the_app():
    graph = _graph()
    assert {"dype_rope.app.cli", "dype_rope.app.errors", "dype_rope.app.plots"} <= set(graph)
    core = [m for m in graph if not m.startswith("dype_rope.app") and m != "dype_rope.__main__"]
    offenders = {m: sorted(t for t in graph[m] if t.startswith("dype_rope.app")) for m in core}
    assert not {m: t for m, t in offenders.items() if t}


def test_no_import_cycle_through_the_app():
    graph = _graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted(m for m in graph if m.startswith("dype_rope.app") and reaches(m, m))
    assert not cycles, f"modules of the app on an import cycle: {cycles}"
    # the cycles this layout removed: the shared error type and device lookup live in their own module
    assert graph["dype_rope.app.errors"] == set()
    assert "dype_rope.app.cli" not in graph["dype_rope.app.bench"] | graph["dype_rope.app.generate"]


def test_importing_the_library_loads_no_app_module():
    code = "import sys, dype_rope; print(sorted(m for m in sys.modules if m.startswith('dype_rope.app')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


def test_every_package_folder_is_installed():
    """pyproject.toml lists the packages by hand (kernels/ and adapters/ install inside dype_rope): every folder
    with an __init__.py must be on that list, or a regular (non-editable) install lacks it."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest's own TOML reader
        import tomli as tomllib

    root = PACKAGE.parent
    setup = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {name: root / folder for name, folder in setup["package-dir"].items()}

    def folder(package: str) -> Path:
        top = max((name for name in folders if package == name or package.startswith(name + ".")), key=len)
        return folders[top].joinpath(*package[len(top) + 1 :].split(".")) if package != top else folders[top]

    listed = {folder(p).resolve() for p in setup["packages"]}
    on_disk = {init.parent.resolve() for top in folders.values() for init in top.rglob("__init__.py")}
    assert on_disk - listed == set()
    assert {PACKAGE / "app", PACKAGE / "schedules"} <= listed
