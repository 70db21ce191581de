"""ComfyUI diffusion models DyPE refuses, each with the reason (qualified class name -> why), and the ones with no
position encoding at all (nothing to rescale; the coverage report leaves them out).

DyPE rescales the frequencies of a rotary encoding axis by axis, by how far the generated image's token grid
exceeds the grid the model was trained on. A model is refused here when its encoding has no such axis: learned
absolute positions (there is no frequency to rescale, only a trained table), frequencies learned as a mix of
axes, a 1-D sequence (audio), or a 3-D asset's point set. The reason is raised when the user patches it.
"""

from __future__ import annotations

from torch import nn

from ..base import qualified_name

REFUSED: dict[str, str] = {}

NO_POSITIONS: dict[str, str] = {}


def refusal(model: nn.Module) -> str | None:
    """Why DyPE refuses this diffusion model (its class or a base class is in REFUSED), or None."""
    for cls in type(model).__mro__:
        reason = REFUSED.get(qualified_name(cls))
        if reason is not None:
            return reason
    return None
