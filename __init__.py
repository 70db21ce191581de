"""ComfyUI custom-node entry: ComfyUI imports this file when the repository sits in custom_nodes/.

Importing it does nothing; ComfyUI then calls `comfy_entrypoint`, which loads the `dype_rope` package from
this checkout (or uses the one already imported) and hands ComfyUI the DyPE node. In an installed package
kernels/ and adapters/ live inside dype_rope/; in a checkout they sit beside it, so the package is given
both folders to search. Nothing else in the repository needs this file.
"""

import importlib.util
import os
import sys


def _load_dype_rope():
    if "dype_rope" in sys.modules:
        return sys.modules["dype_rope"]
    root = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "dype_rope",
        os.path.join(root, "dype_rope", "__init__.py"),
        submodule_search_locations=[os.path.join(root, "dype_rope"), root],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["dype_rope"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["dype_rope"]
        raise
    return module


async def comfy_entrypoint():
    _load_dype_rope()
    from dype_rope.adapters.comfyui.node import DyPEExtension

    return DyPEExtension()


__all__ = ["comfy_entrypoint"]
