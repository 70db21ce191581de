"""Nothing in the library core or the adapters imports in a circle (imports inside functions count too: a
circle there is as hard to follow, and as fragile, as one at the top of a file)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the command-line app (cli, bench, generate, demo, plotting and their helpers) is not part of the core
CORE = ("__init__", "config", "patching", "pipelines", "rope", "rope_formats", "sincos", "timestep")


def modules() -> dict[str, Path]:
    found = {f"dype_rope.{name}" if name != "__init__" else "dype_rope": ROOT / "dype_rope" / f"{name}.py"
             for name in CORE}
    found["dype_rope.schedules"] = ROOT / "dype_rope" / "schedules" / "__init__.py"
    for path in (ROOT / "dype_rope" / "schedules").glob("[!_]*.py"):
        found[f"dype_rope.schedules.{path.stem}"] = path
    found["dype_rope.schedules._common"] = ROOT / "dype_rope" / "schedules" / "_common.py"
    for path in (ROOT / "adapters").glob("*.py"):
        name = "dype_rope.adapters" if path.stem == "__init__" else f"dype_rope.adapters.{path.stem}"
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            stem = node.module or ""
            base = (f"{base}.{stem}" if node.level else stem).strip(".")
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_imports():
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    assert "dype_rope.adapters.flux_embed" in graph["dype_rope.adapters.flux_fused"]
    assert "dype_rope.adapters.flux_fused" in graph["dype_rope.adapters.flux"]  # the lazy one counts too
    assert "dype_rope.rope" in graph["dype_rope.adapters.base"]


def test_nothing_imports_in_a_circle():
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
