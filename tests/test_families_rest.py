"""The refusals of adapters/families/by_rest.py: each class, built tiny from its config, makes patch() raise
its own reason; and the premises of two of them checked against the diffusers code they rest on."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.controlnets import TINY_QWEN_CONTROLNET
from families.tiny import tiny

FLUX_CONTROLNET = dict(
    patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6),
)
HUNYUAN_CONTROLNET = dict(
    conditioning_channels=3, num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2,
    sample_size=8, hidden_size=16, transformer_num_layers=2, cross_attention_dim=16, cross_attention_dim_t5=16,
    pooled_projection_dim=16, text_len=4, text_len_t5=4, use_style_cond_and_image_meta_size=False,
)


def _multi(name: str, net: str, config: dict):
    import diffusers

    return lambda: getattr(diffusers, name)([tiny(net, config)])


CASES = [
    ("Kandinsky6SRTransformer3DModel", lambda: tiny("Kandinsky6SRTransformer3DModel", dict(
        in_visual_dim=4, out_visual_dim=4, time_dim=16, model_dim=32, ff_dim=32, num_visual_blocks=1,
        axes_dims=(8, 12, 12))), "trained on \\(transformer.config.tile_sizes\\)"),
    ("HunyuanDiT2DControlNetModel", lambda: tiny("HunyuanDiT2DControlNetModel", HUNYUAN_CONTROLNET),
     "same 32 x 32 position box"),
    ("HunyuanDiT2DMultiControlNetModel", _multi("HunyuanDiT2DMultiControlNetModel", "HunyuanDiT2DControlNetModel",
                                               HUNYUAN_CONTROLNET), "same 32 x 32 position box"),
    ("ConsisIDTransformer3DModel", lambda: tiny("ConsisIDTransformer3DModel", dict(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=16, num_layers=1, sample_width=8, sample_height=8, sample_frames=5,
        use_rotary_positional_embeddings=True)), "already interpolates into the training box"),
    ("QwenImage21Transformer2DModel", lambda: tiny("QwenImage21Transformer2DModel", dict(
        in_channels=4, out_channels=4, num_layers=1, attention_head_dim=32, num_attention_heads=2, context_in_dim=16,
        axes_dims_rope=(8, 12, 12))), "caches its prefix keys after RoPE"),
    ("FluxMultiControlNetModel", _multi("FluxMultiControlNetModel", "FluxControlNetModel", FLUX_CONTROLNET),
     "patch those one by one"),
    ("QwenImageMultiControlNetModel", _multi("QwenImageMultiControlNetModel", "QwenImageControlNetModel",
                                            TINY_QWEN_CONTROLNET), "patch those one by one"),
]


@pytest.mark.parametrize("name, build, why", CASES, ids=[c[0] for c in CASES])
def test_refused_with_its_reason(name, build, why):
    model = build()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match=f"does not patch {name}: .*{why}"):
        dype_rope.patch(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # left as it was


def test_the_nets_of_a_flux_multi_controlnet_patch_one_by_one():
    """What the FluxMultiControlNetModel refusal tells users to do works."""
    multi = _multi("FluxMultiControlNetModel", "FluxControlNetModel", FLUX_CONTROLNET)()
    handle = dype_rope.patch(multi.nets[0])
    assert handle.adapter.name == "flux"
    handle.remove()


def test_qwen_image21_prefix_cache_holds_rotated_keys():
    """The premise of the Qwen-Image 2.1 refusal, on the stock attention: the keys stored at the "extract" step
    are rotated by that step's tables, and a "cached" step reuses them as they are, whatever its own tables."""
    from diffusers.models.transformers import transformer_qwenimage21 as q21

    attn = CASES[4][1]().transformer_blocks[0].attn
    prefix, target = 3, 4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, prefix + target, attn.inner_dim, generator=g)
    angles_first = torch.rand(prefix + target, 16, generator=g) * 6  # head_dim 32: 16 complex pairs
    angles_later = angles_first * 0.5  # another step's tables: DyPE's frequencies move with t
    first, later = torch.polar(torch.ones_like(angles_first), angles_first), torch.polar(
        torch.ones_like(angles_later), angles_later
    )
    cache = q21.QwenImage21KVLayerCache()
    with torch.no_grad():
        _, key_first, _, _ = q21._qwenimage21_prepare_qkv(attn, x, first, cache, "extract", slice(0, prefix))
        _, key_cached, _, _ = q21._qwenimage21_prepare_qkv(
            attn, x[:, prefix:], later[prefix:], cache, "cached", None
        )
        _, key_later, _, _ = q21._qwenimage21_prepare_qkv(attn, x, later, None, None, None)
    assert torch.equal(key_cached[:, :prefix], key_first[:, :prefix])  # the first step's rotation, reused
    assert (key_cached[:, :prefix] - key_later[:, :prefix]).abs().max() > 1e-2  # not the later step's
    torch.testing.assert_close(key_cached[:, prefix:], key_later[:, prefix:])  # the target follows the tables


def test_z_image_controlnet_patch_leaves_the_shared_rope_embedder_alone():
    """ZImageControlNetModel holds the transformer's RopeEmbedder object: patching the ControlNet replaces its own
    attribute only, so an unpatched transformer keeps stock tables, and remove() puts the shared object back."""
    from families.controlnets import tiny_zimage_controlnet

    controlnet = tiny_zimage_controlnet()
    shared = controlnet.rope_embedder
    ids = torch.tensor([[1, 0, 0], [1, 5, 7]])
    stock = shared(ids)
    handle = dype_rope.patch(controlnet)
    assert controlnet.rope_embedder is not shared
    assert torch.equal(shared(ids), stock)
    handle.remove()
    assert controlnet.rope_embedder is shared
