"""Table layouts of ComfyUI's ids-to-tables embedders, each a map from EmbedND's per-pair rotation matrices.

EmbedND returns, for pair j of the concatenated axes (the pairs `rope_formats.rotation_matrices` builds, axes in
order), [[cos_j, -sin_j], [sin_j, cos_j]]. An embedder with the same numbers in another arrangement is a row with
its layout here: the replacement builds DyPE's pairs, arranges them by the layout, and arranges its keep-mask the
same way, so an entry keeps the stock number unless the pair it came from is rescaled. Each layout is a gather
along the pair axis (-3) and over the rows of the 2 x 2 matrices, so it applies to a mask as to a table.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def pairs(m: Tensor) -> Tensor:
    """EmbedND itself."""
    return m


def split_half_rows(m: Tensor) -> Tensor:
    """Ernie-Image (ErnieImageEmbedND3): entry k holds row 0 of pair k // 2 and row 1 of pair D/4 + k // 2, the
    rotation its split-half attention applies to (x_k, x_{k + D/2})."""
    n = m.shape[-3]
    k = torch.arange(n, device=m.device) // 2
    top = m.index_select(-3, k)[..., 0:1, :]
    bottom = m.index_select(-3, k + n // 2)[..., 1:2, :]
    return torch.cat([top, bottom], dim=-2)


LAYOUTS: dict[str, Callable[[Tensor], Tensor]] = {"pairs": pairs, "split_half_rows": split_half_rows}
