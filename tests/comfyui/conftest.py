"""ComfyUI 0.29.0 (shared/comfyui), imported once, in CPU mode, after every other test of the session: importing
ComfyUI sets process-wide options (its argument defaults, torch's thread count here), so its tests run last."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared_code, reference_dype

from shared_code import require  # noqa: E402

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(session, config, items):
    mine = [item for item in items if HERE in Path(str(item.fspath)).resolve().parents]
    others = [item for item in items if item not in mine]
    items[:] = others + mine


@pytest.fixture(scope="session")
def comfy():
    import tiny_comfy

    return tiny_comfy.import_comfy(str(require("comfyui")))
