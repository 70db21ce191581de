"""The repository as a ComfyUI custom-node folder: without any pip install, its top-level __init__.py must load
the library from the checkout itself, kernels/ and adapters/ included (they sit beside dype_rope/ there). Run in
a fresh interpreter on a copy of the repository, with the development install's import hooks removed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys
    # no pip-installed dype_rope in this process: drop an editable install's finders and path entries
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    sys.path[:] = [p for p in sys.path if "dype" not in p.lower()]
    node = sys.argv[1]
    spec = importlib.util.spec_from_file_location("custom_node", node + "/__init__.py",
                                                  submodule_search_locations=[node])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "dype_rope" not in sys.modules, "importing the node folder must do nothing by itself"
    assert callable(module.comfy_entrypoint)
    module._load_dype_rope()
    import dype_rope, dype_rope.adapters, dype_rope.kernels, torch
    from dype_rope.adapters.comfyui import ADAPTERS
    for m in (dype_rope, dype_rope.adapters, dype_rope.kernels):
        assert m.__file__.startswith(node), m.__file__
    assert "flux" in ADAPTERS
    print("ok", dype_rope.__file__)
    """
)


def test_the_checkout_loads_itself_as_a_custom_node(tmp_path):
    node = tmp_path / "custom_nodes" / "dype_rope_node"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.endswith((".py", ".toml", ".md")) and not name.startswith(("tests/", "benchmarks/", "docs/")):
            (node / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, node / name)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(node)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok " + str(node))
