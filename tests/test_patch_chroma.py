"""The FLUX adapter on a model that is not a FluxTransformer2DModel but is built on its FluxPosEmbed (Chroma):
detected without naming it, its own argument order read by signature, identical tables to FLUX's."""

from __future__ import annotations

import torch
import torch._dynamo.testing
from diffusers import ChromaTransformer2DModel

import dype_rope
from tiny_models import flux_img_ids, flux_inputs, tiny_flux


def tiny_chroma():
    torch.manual_seed(0)
    return ChromaTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, axes_dims_rope=(4, 6, 6), approximator_num_channels=8, approximator_hidden_dim=16,
        approximator_layers=1,
    ).eval()


def chroma_inputs(h, w, t):
    g = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(1, h * w, 4, generator=g), encoder_hidden_states=torch.randn(1, 5, 32,
                generator=g), timestep=torch.tensor([t]), img_ids=flux_img_ids(h, w), txt_ids=torch.zeros(5, 3))


def tables_seen(model, inputs):
    seen = []
    hook = model.pos_embed.register_forward_hook(lambda mod, args, out: seen.append(out))
    with torch.no_grad():
        out = model(**inputs).sample
    hook.remove()
    return out, seen[0]


def test_chroma_is_detected_and_patched_like_flux():
    chroma, flux = tiny_chroma(), tiny_flux()
    x = chroma_inputs(12, 16, 0.6)
    stock, _ = tables_seen(chroma, x)
    with dype_rope.patch(chroma, base_grid=(8, 8)) as handle, dype_rope.patch(flux, base_grid=(8, 8)):
        assert handle.adapter.name == "flux"
        patched, (cos, sin) = tables_seen(chroma, x)
        _, (flux_cos, flux_sin) = tables_seen(flux, flux_inputs(12, 16, t=0.6, text_len=5))
    assert torch.equal(cos, flux_cos) and torch.equal(sin, flux_sin)
    assert not torch.equal(patched, stock)
    with torch.no_grad():
        assert torch.equal(chroma(**x).sample, stock)  # removed: the original again


def test_chroma_at_base_grid_is_bit_exact_and_compiles_once():
    chroma = tiny_chroma()
    x = chroma_inputs(8, 8, 0.3)
    with torch.no_grad():
        stock = chroma(**x).sample
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    with dype_rope.patch(chroma, base_grid=(8, 8)):
        with torch.no_grad():
            assert torch.equal(chroma(**x).sample, stock)
            compiled = torch.compile(chroma, backend=counter, fullgraph=True)
            for t in torch.linspace(1.0, 0.05, 6):
                compiled(**chroma_inputs(12, 16, float(t)))
    assert counter.frame_count == 1


def test_chroma_timestep_read_from_its_own_argument_order():
    chroma = tiny_chroma()
    x = chroma_inputs(12, 16, 0.25)
    order = ["hidden_states", "encoder_hidden_states", "timestep", "img_ids", "txt_ids"]  # Chroma: no pooled input
    with dype_rope.patch(chroma, base_grid=(8, 8)), torch.no_grad():
        by_name = chroma(**x).sample
        positional = chroma(*[x[k] for k in order]).sample
        other_t = chroma(**chroma_inputs(12, 16, 0.9)).sample
    assert torch.equal(by_name, positional)
    assert not torch.equal(by_name, other_t)
