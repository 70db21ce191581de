"""What every command shares: the usage error (one line on stderr, exit status 2) and the checks that turn
bad arguments into one, before any work is done."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

EXTRAS = {"diffusers": "diffusers", "matplotlib": "plot"}  # module -> the extra that installs it


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def resolve_device(name: str | None):
    """--device as a torch.device: default cuda when present, else cpu; a device this machine lacks is a
    usage error."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown --device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name!r}, but this machine has no CUDA device")
    return device


def missing(module: str) -> bool:
    """True when `module` cannot be imported (not installed, or its import blocked)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return True
    return False


def install_hint(module: str) -> str:
    return f"pip install 'dype-rope[{EXTRAS.get(module, module)}]'"


def require(module: str, command: str) -> None:
    if importlib.util.find_spec(module) is None or missing(module):
        raise UsageError(f"`dype-rope {command}` needs {module}: {install_hint(module)}")


def check_writable(path: str | os.PathLike, suffixes: tuple[str, ...], what: str = "-o") -> Path:
    """Refuse, before any work, an output path that cannot be written: a wrong suffix, a folder, a missing
    folder above it, or a place this user may not write to."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: it is a folder")
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"cannot write {str(path)!r}: {what} must end in {' or '.join(suffixes)}")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist")
    if out.exists() and not os.access(out, os.W_OK):
        raise UsageError(f"cannot write {str(path)!r}: permission denied")
    try:  # the only sure test of a folder (permissions, read-only mounts, root): create a file there
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".dype-rope-", suffix=".probe"):
            pass
    except OSError as err:
        raise UsageError(f"cannot write {str(path)!r}: {err.strerror or type(err).__name__}") from None
    return out
