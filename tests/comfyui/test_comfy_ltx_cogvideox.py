"""What only the method rows of LTXV / LTX-2 and CogVideoX have, beyond the contract suite (test_comfy_contract):
LTX's per-sample plans, LTX-2 sampled with audio, the install probes, CogVideoX's configuration refusal and time
convention, and each row's native grid."""

from __future__ import annotations

import pytest
import torch

import dype_rope
import tiny_comfy
from dype_rope.adapters.comfyui import comfy_adapter_class

BASE = (8, 8)


def _node(name, **settings):
    from dype_rope.adapters.comfyui.node import dype_model

    patcher, positive, negative = tiny_comfy.build(name, 0)
    settings.setdefault("base_resolution", BASE[0] * tiny_comfy.FAMILIES[name].pixels_per_token)
    return patcher, dype_model(patcher, **settings), positive, negative


def _recording(holder, key, log):
    """Wrap the replaced method held at holder[key] so that every call's (args, output) lands in `log`."""
    inner = holder[key]

    def record(*args, **kwargs):
        out = inner(*args, **kwargs)
        log.append((args, out))
        return out

    holder[key] = record
    return inner


@pytest.mark.parametrize("name", ["ltxv", "ltxav"])
def test_ltx_plans_each_sample_of_a_mixed_time_batch_at_its_own_sigma(comfy, name):
    """LTX's tables carry a batch axis: in a direct call at sigmas (0.9, 0.4) each sample's video tables are bit for
    bit those of the sample called alone."""
    model = tiny_comfy.make_model(name)
    dm = model.diffusion_model
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 128, 1, 16, 12, generator=g)
    context = torch.randn(1, 7, 32, generator=g)
    if name == "ltxav":  # what LTXAV.extra_conds hands the model: the caption through its text connectors
        with torch.no_grad():
            context = dm.preprocess_text_embeds(context)
    handle = dype_rope.patch(dm, base_grid=BASE)
    log = []
    inner = _recording(vars(dm), "_prepare_positional_embeddings", log)

    def call(sigmas):
        t = torch.tensor(sigmas)
        b = len(sigmas)
        if name == "ltxv":
            extra = {"attention_mask": torch.ones(b, 7, dtype=torch.long)}
        else:  # LTX-2 takes [video, audio]: BaseModel unpacks the latent into that list by its shapes
            extra = {"latent_shapes": [x.shape]}
        with torch.no_grad():
            model.apply_model(x.expand(b, -1, -1, -1, -1), t, c_crossattn=context.expand(b, -1, -1),
                              transformer_options={"sigmas": t}, frame_rate=25, **extra)
        (_, out), = log[-1:]
        return out[0][0][0] if name == "ltxav" else out[0]

    try:
        both = call((0.9, 0.4))
        alone = [call((0.9,)), call((0.4,))]
    finally:
        vars(dm)["_prepare_positional_embeddings"] = inner
        handle.remove()
    assert not torch.equal(alone[0], alone[1])
    for i, own in enumerate(alone):
        assert torch.equal(both[i : i + 1], own)


def test_ltx2_sampled_with_audio_keeps_its_audio_tables(comfy):
    """A video + audio latent (ComfyUI's NestedTensor, as LTXVConcatAVLatent makes it): above the base grid the
    video tables move, the audio tables and both cross-modal tables are the stock method's, bit for bit."""
    import comfy.nested_tensor
    import comfy.sample

    patcher, dype, positive, negative = _node("ltxav")
    key = "diffusion_model._prepare_positional_embeddings"
    stock_method = dype.object_patches[key].original
    latent = comfy.nested_tensor.NestedTensor([torch.zeros(1, 128, 1, 16, 12), torch.zeros(1, 8, 5, 16)])
    g = torch.Generator().manual_seed(0)
    noise = comfy.nested_tensor.NestedTensor([torch.randn(t.shape, generator=g) for t in latent.unbind()])
    log = []
    inner = _recording(dype.object_patches, key, log)
    try:
        out = comfy.sample.sample(dype, noise, 2, 2.0, "euler", "simple", positive, negative, latent, seed=0,
                                  disable_pbar=True)
    finally:
        dype.object_patches[key] = inner
    assert all(torch.isfinite(t).all() for t in out.unbind())
    assert log
    for args, tables in log:
        stock = stock_method(*args)
        assert args[0][1].shape[2] == 5  # the audio tokens were there
        assert not torch.equal(tables[0][0][0], stock[0][0][0])  # video: rescaled
        assert torch.equal(tables[0][1][0], stock[0][1][0])  # video, for the cross-modal attention
        assert torch.equal(tables[1][0][0], stock[1][0][0]) and torch.equal(tables[1][1][0], stock[1][1][0])


def test_cogvideox_without_rope_is_refused_by_its_configuration(comfy):
    """CogVideoX 2B: the same class, with absolute sin-cos positions (use_rotary_positional_embeddings=False, as
    model_detection sets it when the checkpoint has patch_embed.pos_embedding)."""
    from dype_rope.adapters.comfyui.node import NodeInputError, dype_model

    config = dict(tiny_comfy.FAMILIES["cogvideox"].unet_config, use_rotary_positional_embeddings=False,
                  use_learned_positional_embeddings=True, attention_head_dim=48, sample_height=8, sample_width=8,
                  sample_frames=1)  # its sin-cos table splits the width in thirds: 2 x 48
    family = tiny_comfy.Family("CogVideoX_T2V", config, 16, 2, True, 32)
    tiny_comfy.FAMILIES["cogvideox_2b"] = family
    try:
        patcher, _, _ = tiny_comfy.build("cogvideox_2b", 0)
    finally:
        del tiny_comfy.FAMILIES["cogvideox_2b"]
    dm = patcher.get_model_object("diffusion_model")
    for refuse in (lambda: dype_rope.patch(dm), lambda: comfy_adapter_class(dm)):
        with pytest.raises(TypeError, match="no RoPE .*absolute sin-cos"):
            refuse()
    with pytest.raises(NodeInputError, match="no RoPE"):
        dype_model(patcher)
    assert "_get_rotary_emb" not in vars(dm)  # nothing was left on the model


def test_an_ltx_method_of_another_frequency_ladder_is_refused_at_install(comfy):
    """The probe: a model whose method builds another ladder than LTX's (here theta 20000) is refused, not
    patched on the assumption."""
    from comfy.ldm.lightricks.model import generate_freq_grid_pytorch

    dm = tiny_comfy.make_model("ltxv").diffusion_model
    dm.freq_grid_generator = lambda theta, n, dim, device: generate_freq_grid_pytorch(2 * theta, n, dim, device)
    with pytest.raises(TypeError, match="does not return LTX's centred RoPE"):
        dype_rope.patch(dm, base_grid=BASE)
    assert "_prepare_positional_embeddings" not in vars(dm)


def test_a_cogvideox_method_of_another_layout_is_refused_at_install(comfy):
    dm = tiny_comfy.make_model("cogvideox15").diffusion_model
    stock = dm._get_rotary_emb
    dm._get_rotary_emb = lambda h, w, t, device=None: tuple(reversed(stock(h, w, t, device=device)))  # (sin, cos)
    with pytest.raises(TypeError, match="does not return CogVideoX's"):
        dype_rope.patch(dm, base_grid=BASE)


def test_cogvideox_takes_the_models_own_timestep_not_sigma(comfy):
    """The node starts each call from the timestep ComfyUI's discrete sampling gives the model (0 .. 999), not its
    sigma (about 0.03 .. 160 for zero-SNR v-prediction): DyPE's t = timestep / 1000, as the direct path reads it."""
    from dype_rope.adapters.comfyui.patcher import APPLY_MODEL, DYPE_KEY

    patcher, dype, positive, negative = _node("cogvideox")
    (wrapper,) = dype.wrappers[APPLY_MODEL][DYPE_KEY]
    adapter = wrapper.__self__
    seen = []
    start = adapter.start_call

    def spy(x, sigma, *args, **kwargs):
        seen.append(sigma.clone())
        return start(x, sigma, *args, **kwargs)

    adapter.start_call = spy
    try:
        tiny_comfy.sample(comfy, "cogvideox", dype, positive, negative,
                          tiny_comfy.latent("cogvideox", 16, 12), steps=3, cfg=1.0)
    finally:
        del adapter.start_call
    sampling = patcher.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", 3)[:-1]
    assert [float(s[0]) for s in seen] == [float(sampling.timestep(s)) for s in sigmas]
    assert all(0 <= float(s[0]) <= 999 for s in seen) and float(sigmas[0]) > 1  # sigma itself is no time


def test_cogvideox_sampled_as_flow_is_refused_by_the_node(comfy):
    from comfy.model_sampling import CONST, ModelSamplingDiscreteFlow

    from dype_rope.adapters.comfyui.node import NodeInputError, dype_model

    class Flow(ModelSamplingDiscreteFlow, CONST):
        pass

    patcher, _, _ = tiny_comfy.build("cogvideox", 0)
    patcher.add_object_patch("model_sampling", Flow(patcher.model.model_config))
    with pytest.raises(NodeInputError, match="discrete DDPM model_sampling"):
        dype_model(patcher)


@pytest.mark.parametrize("name, grid", [("ltxv", (16, 24)), ("ltxav", (16, 24)), ("cogvideox", (30, 45)),
                                        ("cogvideox15", (48, 85))])
def test_base_resolution_zero_is_the_rows_native_grid(comfy, name, grid):
    """512 x 768 px at 32 px per token (EmptyLTXVLatentVideo's default); CogVideoX 1.0's 60 x 90 and 1.5's
    96 x 170 latent sample sizes at 2 x 2 patches."""
    from dype_rope.adapters.comfyui.patcher import APPLY_MODEL, DYPE_KEY

    _, dype, _, _ = _node(name, base_resolution=0)
    (wrapper,) = dype.wrappers[APPLY_MODEL][DYPE_KEY]
    assert wrapper.__self__.base_grid == grid


def test_ltx_guide_tokens_never_change_the_video_tables(comfy):
    """LTXV's guides (LTXVAddGuide: keyframe tokens appended after the video's, with pixel coordinates of their own,
    here a 2x-dilated guide reaching twice the video's extent) are embedded in the same call as the video: the
    video tokens' tables are those of the call without them, since the scale comes from the latent's shape."""
    from comfy.ldm.lightricks.symmetric_patchifier import latent_to_pixel_coords

    dm = tiny_comfy.make_model("ltxv").diffusion_model
    handle = dype_rope.patch(dm, base_grid=BASE)
    try:
        method, adapter = vars(dm)["_prepare_positional_embeddings"], handle.adapter
        video = latent_to_pixel_coords(dm.patchifier.get_latent_coords(2, 16, 12, 1, "cpu"), dm.vae_scale_factors)
        guide = latent_to_pixel_coords(dm.patchifier.get_latent_coords(1, 16, 12, 1, "cpu"), dm.vae_scale_factors)
        guide = guide * torch.tensor([0, 2, 2]).view(1, 3, 1, 1) + torch.tensor([40, 0, 0]).view(1, 3, 1, 1)
        call = adapter.start_call(torch.zeros(1, 128, 2, 16, 12), torch.tensor([0.8]), {})
        alone, _ = adapter.state.run(call, method, video, 25, torch.float32)
        both, _ = adapter.state.run(call, method, torch.cat([video, guide], dim=2), 25, torch.float32)
        stock, _ = method.original(video, 25, torch.float32)
    finally:
        handle.remove()
    assert not torch.equal(alone, stock)  # above the base grid: rescaled
    assert torch.equal(both[:, : alone.shape[1]], alone)
