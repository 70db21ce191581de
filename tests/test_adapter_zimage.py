"""What only Z-Image has: a rope embedder that is a plain object (not an nn.Module), and omni mode, where
conditioning latents keep their positions and the generated one sets the scale. The shared contract:
tests/test_contract.py."""

from __future__ import annotations

import torch
from torch import nn

import dype_rope
from families.row import encoding_calls
from families.zimage import ZIMAGE, tiny_zimage, zimage_omni_inputs
from reference_dype import rope_pairs


def test_replaced_by_a_plain_object_with_the_same_settings():
    model = tiny_zimage()
    assert not isinstance(model.rope_embedder, nn.Module)
    with dype_rope.patch(model):
        assert not isinstance(model.rope_embedder, nn.Module)
        assert model.rope_embedder.theta == 256.0 and list(model.rope_embedder.axes_dims) == [8, 12, 12]


def test_omni_conditioning_images_keep_their_positions_and_the_target_sets_the_scale():
    model = tiny_zimage(siglip_feat_dim=8)
    h, w, cond = 4, 6, (10, 10)
    with dype_rope.patch(model, base_grid=(2, 3)):
        calls = encoding_calls(model, "rope_embedder", lambda: model(**zimage_omni_inputs(h, w, cond, t=0.5)))
    assert calls[0][0][0][:, 1].amax().item() == cond[0] - 1  # the conditioning latent's own rows are there
    assert len(calls) == 3  # latents, captions, SigLIP features
    for (ids,), table in calls:
        cos, sin = rope_pairs(ids, (8, 12, 12), 256.0, [1.0, h / 2, w / 3], 0.5, (1.0, 2, 3))
        torch.testing.assert_close(table.to(torch.complex128), torch.complex(cos, sin), atol=ZIMAGE.layout.tol, rtol=0)
