import os

# Without a GPU the Triton providers run under the interpreter (slow, but it shows they work); this must be
# decided before anything imports triton.
try:
    import torch

    _cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _cuda = False
if not _cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")
