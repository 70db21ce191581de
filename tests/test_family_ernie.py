"""Ernie-Image's own checks (the contract suite runs the rest on its row, tests/families/angles_ernie.py): YaRN's
attention factor reaches the attention where cos and sin are formed (per sample in a mixed-time batch:
tests/test_hardening_edge_inputs.py), the caption never sets the scale, the install checks refuse what they
must, and enable() keeps the pipeline's fixed shift."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

import dype_rope
from families.angles_ernie import ERNIE_IMAGE as ROW
from families.row import RopeLayout


def reference_attention(attn, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """The attention written from reference tables: pairs [L, D/2, 2] = (m cos, m sin) of pair j; channel e reads
    pair e // 2 and rotates with channel e +- D/2 (rotate_half), in float64; projections and norms are the
    module's own."""
    heads = attn.heads
    q = attn.norm_q(attn.to_q(h).unflatten(-1, (heads, -1))).double()
    k = attn.norm_k(attn.to_k(h).unflatten(-1, (heads, -1))).double()
    v = attn.to_v(h).unflatten(-1, (heads, -1)).double()
    cos = pairs[..., 0].repeat_interleave(2, -1)[None, :, None, :]  # [1, L, 1, D]
    sin = pairs[..., 1].repeat_interleave(2, -1)[None, :, None, :]

    def rotate(x):
        d = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., d:], x[..., :d]], -1) * sin

    q, k = rotate(q), rotate(k)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    out = out.transpose(1, 2).flatten(2, 3)
    return out.float() @ attn.to_out[0].weight.T


def attention_call(model, x):
    """(input hidden states, output) of the first layer's attention in a call of the model."""
    attn = model.layers[0].self_attention
    seen = {}
    pre = attn.register_forward_pre_hook(lambda m, args: seen.setdefault("h", args[0]))
    post = attn.register_forward_hook(lambda m, args, out: seen.setdefault("out", out))
    try:
        ROW.run(model, x)
    finally:
        pre.remove()
        post.remove()
    return seen["h"], seen["out"]


@pytest.mark.parametrize("aspect", ["per-axis", "isotropic"])
def test_yarn_attention_factor_multiplies_cos_and_sin_where_the_attention_forms_them(aspect):
    model, t = ROW.build(), 0.75
    x = ROW.inputs(ROW.above, t)
    with dype_rope.patch(model, method="yarn", aspect=aspect, base_grid=ROW.base):
        h, out = attention_call(model, x)
    pairs = RopeLayout.expected(ROW.layout, [((), None)], ROW.above, ROW.base, t, aspect, None, method="yarn")[0]
    attn = model.layers[0].self_attention
    with torch.no_grad():
        want = reference_attention(attn, h, pairs)
        without_factor = reference_attention(attn, h, pairs / pairs.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(out, want, rtol=0, atol=2e-5)
    # the factor is not 1 here: an attention that dropped it would be this far off
    assert (without_factor - want).abs().max() > 1e-3


def test_the_caption_never_sets_the_scale():
    """A caption of 3 tokens and one of 40 (longer than the image's rows and columns): the image tokens' stretched
    pairs turn at the same frequencies."""
    model = ROW.build()
    angles = []
    for n in (3, 40):
        x = ROW.inputs(ROW.above, 0.6)
        x["text_bth"] = torch.randn(1, n, 8)
        x["text_lens"] = torch.tensor([n])
        seen = []
        with dype_rope.patch(model, base_grid=ROW.base):
            hook = model.pos_embed.register_forward_hook(lambda m, a, out: seen.append(out))
            ROW.run(model, x)
            hook.remove()
        image = seen[0][0, : ROW.above[0] * ROW.above[1], 0, 4:]  # rows and columns (axis 0: the caption length)
        angles.append(image)
    assert torch.equal(angles[0], angles[1])


def test_a_processor_of_the_users_is_refused_and_the_model_left_stock():
    from diffusers.models.transformers.transformer_ernie_image import ErnieImageSingleStreamAttnProcessor

    class Mine(ErnieImageSingleStreamAttnProcessor):
        pass

    model = ROW.build()
    model.layers[0].self_attention.set_processor(Mine())
    encoding = model.pos_embed
    with pytest.raises(TypeError, match="runs Mine, not ErnieImageSingleStreamAttnProcessor"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model) and model.pos_embed is encoding
    assert type(model.layers[0].self_attention.processor) is Mine


def test_a_stock_processor_the_replacement_no_longer_reproduces_is_refused(monkeypatch):
    from diffusers.models.transformers.transformer_ernie_image import ErnieImageSingleStreamAttnProcessor

    stock = ErnieImageSingleStreamAttnProcessor.__call__
    monkeypatch.setattr(ErnieImageSingleStreamAttnProcessor, "__call__",
                        lambda self, *a, **k: stock(self, *a, **k) * 1.0001)
    model = ROW.build()
    with pytest.raises(TypeError, match="no longer reproduces"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_a_module_whose_real_theta_is_not_its_declared_one_is_refused():
    model = ROW.build()
    module, real = model.pos_embed, model.pos_embed.forward

    def off(ids):  # computes with 5% more theta than the module declares
        module.theta = 256 * 1.05
        try:
            return real(ids)
        finally:
            module.theta = 256

    module.forward = off
    with pytest.raises(TypeError, match="differ from plain RoPE"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_enable_patches_the_transformer_and_keeps_the_pipelines_fixed_shift():
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    cls = diffusers.ErnieImagePipeline
    parts = {n: None for n in inspect.signature(cls.__init__).parameters if n != "self"}
    parts.update(transformer=ROW.build(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe = cls(**parts)
    sigmas = torch.linspace(1.0, 0.0, 13)[:-1].numpy()  # as ErnieImagePipeline sets them
    want = FlowMatchEulerDiscreteScheduler(shift=3.0)
    want.set_timesteps(sigmas=sigmas)
    handle = dype_rope.enable(pipe, 1536, 2048)
    assert handle.mu is None and handle.transformer.adapter.name == "ernie-image"
    assert handle.image_seq_len == (1536 // 16) * (2048 // 16)  # 16 px per token: vae_scale_factor 16, patch 1
    pipe.scheduler.set_timesteps(sigmas=sigmas)
    assert torch.equal(pipe.scheduler.timesteps, want.timesteps) and torch.equal(pipe.scheduler.sigmas, want.sigmas)
    handle.remove()
    assert not dype_rope.is_patched(pipe.transformer)
    with pytest.raises(ValueError, match="no resolution shift"):
        dype_rope.enable(pipe, 1536, 2048, shift="linear")
    assert not dype_rope.is_patched(pipe.transformer)


def test_the_diffusers_and_comfyui_rows_agree_on_grid_axes_tokens_and_time():
    """Both hosts' rows of Ernie-Image: the same native grid, rescaled id axes, pixels per token, and a time that
    is the flow sigma (diffusers' timestep / 1000, ComfyUI's sigma as it is)."""
    from dype_rope.adapters.comfyui.families import FAMILIES as COMFY
    from dype_rope.adapters.table import FAMILIES as DIFFUSERS

    mine = next(f for f in DIFFUSERS if f.name == "ernie-image")
    comfy = next(f for f in COMFY if f.name == "ernie_image")
    assert mine.base_grid == comfy.base_grid == (64, 64)
    assert tuple(mine.rescaled_axes) == tuple(comfy.id_axes) == (1, 2)
    assert mine.pixels_per_token == comfy.pixels_per_token == 16
    assert (mine.time.argument, mine.time.divide_by, mine.time.reverse) == ("timestep", 1000.0, False)
    assert comfy.time == "sigma"
