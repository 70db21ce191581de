"""ComfyUI diffusion models DyPE refuses, each with the reason (qualified class name -> why), and the ones with no
position encoding at all (nothing to rescale; the coverage report leaves them out).

DyPE rescales the frequencies of a rotary encoding axis by axis, by how far the generated image's token grid
exceeds the grid the model was trained on. A model is refused here when its encoding has no such axis: learned
absolute positions (there is no frequency to rescale, only a trained table), frequencies learned as a mix of
axes, a 1-D sequence (audio), or a 3-D asset's point set; or when its positions never leave the trained range
(every grid mapped into one position box, or RoPE applied per fixed-size window); or when a rescale could not
be faithful (a cache holding keys rotated at an earlier step, tables built by a function shared process-wide).
The reason is raised when the user patches it.
"""

from __future__ import annotations

from torch import nn

from ..base import Adapter, qualified_name, register_adapter

_LEARNED = "its image positions are a learned absolute table added to the tokens: there are no frequencies to rescale"
_AUDIO = "an audio model: its rotary positions run along one time axis, with no image rows or columns to rescale"
_NOT_GENERATOR = "not an image generator ({}): it never samples an image above a training resolution"
_ABSOLUTE = (
    "its positions are an absolute sin-cos table added to the tokens, not a rotary encoding; DyPE's ComfyUI path "
    "rescales rotary encodings only"
)

REFUSED: dict[str, str] = {
    # the rotary angles are pos_frequencies [3, heads, D/2] (learned) times (frame, row, col): every pair mixes
    # the three axes, so no pair belongs to one axis and no axis has a theta ladder
    "comfy.ldm.genmo.joint_model.asymm_models_joint.AsymmDiTJoint": (
        "Mochi's rotary frequencies are learned per head as a mix of the frame, row and column positions "
        "(pos_frequencies, 'mixed RoPE'): no frequency belongs to one image axis, so there is no per-axis ladder "
        "for DyPE to rescale"
    ),
    "comfy.ldm.aura.mmdit.MMDiT": "AuraFlow: " + _LEARNED,
    # calc_rope: get_fill_resize_and_crop((th, tw), 512 // 8 // patch) then linspace positions inside that box
    "comfy.ldm.hydit.models.HunYuanDiT": (
        "HunyuanDiT maps every resolution's token grid into the same position box (calc_rope: "
        "get_fill_resize_and_crop into 512 // 8 // patch_size = 32 positions per side, linspace positions inside "
        "it): its positions never leave the trained range, a larger image only gets denser ones, so there is no "
        "extrapolation for DyPE to schedule"
    ),
    # precompute_freqs_cis_2d: linspace(shift, scale * scale_x + shift, n) with scale=16 whatever the grid size
    "comfy.ldm.pixeldit.model.PixDiT_T2I": (
        "PixelDiT spreads every grid, of patches and of pixels alike, over the same position range "
        "(precompute_freqs_cis_2d: linspace(0, 16, n) per axis): its positions never leave the trained range, a "
        "larger image only gets denser ones, so there is no extrapolation for DyPE to schedule; its own "
        "rope_options (scale_x / scale_y) are its resolution control"
    ),
    "comfy.ldm.pixeldit.pid.PidNet": (
        "PiD (PixelDiT's decoder) spreads every grid, of patches and of pixels alike, over the same position "
        "range (precompute_freqs_cis_2d: linspace(0, 16, n) per axis) and already scales each axis' theta by its "
        "own NTK rule from its reference grid (rope_ref_h / rope_ref_w): there is no extrapolated axis left for "
        "DyPE, which would only stack a second rescale on the model's own"
    ),
    # SeedVR2's attention (and its RoPE) runs per window: make_720Pwindows_bysize sizes the windows from the
    # aspect ratio alone (the grid scaled to the 45 x 80 token reference area, split into (4, 3, 3) windows)
    "comfy.ldm.seedvr.model.NaDiT": (
        "SeedVR2 applies its RoPE inside attention windows whose size depends only on the aspect ratio (the token "
        "grid scaled to its 45 x 80 reference area and split into 4 x 3 x 3 windows, make_720Pwindows_bysize): a "
        "larger output gets more windows, each with about the trained positions, so no position runs past its "
        "training extent for DyPE to rescale"
    ),
    # every Cosmos 1 checkpoint (7B, 14B) sets extra_per_block_abs_pos_emb, type "learnable", max_img_h/w 240
    "comfy.ldm.cosmos.model.GeneralDIT": (
        "Cosmos 1 adds a learned absolute position table per axis (extra_pos_embedder, LearnablePosEmbAxis, "
        "cropped to the grid) to the tokens of every block beside its RoPE: DyPE could rescale only the RoPE half "
        "of its position signal, and the learned table ends at max_img_h / patch_spatial = 120 tokens per axis, "
        "where the model stops running at all"
    ),
    # the prefix K/V cache is keyed on input_ids and position_ids, never on the tables that rotated those keys
    "comfy.ldm.hidream_o1.model.HiDreamO1Transformer": (
        "HiDream-O1 caches the keys of its causal prompt prefix across steps with the RoPE of the step that "
        "filled the cache baked in (_kv_cache_entries, keyed on input_ids and position_ids): a per-step rescale "
        "would rotate the image's queries by each step's tables against prefix keys on the first step's, which is "
        "not DyPE"
    ),
    "comfy.ldm.pixart.pixartms.PixArtMS": "PixArt: " + _ABSOLUTE,
    "comfy.ldm.modules.diffusionmodules.mmdit.OpenAISignatureMMDITWrapper": "SD3 / SD3.5: " + _ABSOLUTE,
    "comfy.ldm.ace.model.ACEStepTransformer2DModel": "ACE-Step: " + _AUDIO,
    "comfy.ldm.ace.ace_step15.AceStepConditionGenerationModel": "ACE-Step 1.5: " + _AUDIO,
    "comfy.ldm.audio.dit.AudioDiffusionTransformer": "Stable Audio: " + _AUDIO,
    "comfy.ldm.triposplat.model.LatentSeqMMFlowModel": (
        "TripoSplat generates a 3-D asset as a sequence of latent tokens: there is no image grid whose rows and "
        "columns could be larger than in training"
    ),
    "comfy.ldm.sam3.detector.SAM3Model": _NOT_GENERATOR.format("SAM 3 segments images"),
    "comfy.ldm.rt_detr.rtdetr_v4.RTv4": _NOT_GENERATOR.format("RT-DETR detects objects"),
    "comfy.ldm.depth_anything_3.model.DepthAnything3Net": _NOT_GENERATOR.format("Depth Anything 3 estimates depth"),
}

# diffusion models with no position encoding at all: convolutional UNets and 3-D shape latent sets
NO_POSITIONS: dict[str, str] = {
    "comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel": "SD 1.x / 2.x / XL UNet: convolutions, no positions",
    "comfy.ldm.cascade.stage_c.StageC": "Stable Cascade stage C: convolutional, no positions",
    "comfy.ldm.cascade.stage_b.StageB": "Stable Cascade stage B: convolutional, no positions",
    "comfy.ldm.hunyuan3d.model.Hunyuan3Dv2": "Hunyuan3D 2: a 3-D shape latent set without positions",
    "comfy.ldm.hunyuan3dv2_1.hunyuandit.HunYuanDiTPlain": "Hunyuan3D 2.1: a 3-D shape latent set without positions",
}


def refusal_of(cls: type) -> str | None:
    """Why DyPE refuses this diffusion-model class (it or a base class is in REFUSED), or None."""
    for c in cls.__mro__:
        reason = REFUSED.get(qualified_name(c))
        if reason is not None:
            return reason
    return None


def refusal_message(cls: type) -> str:
    return f"DyPE does not patch {qualified_name(cls)}: {refusal_of(cls)}"


@register_adapter(detect=True)
class ComfyRefused(Adapter):
    """What `dype_rope.patch` finds for a refused ComfyUI model: constructing it raises the reason. A detector,
    not a class registration, so that no refused class is ever listed among the supported ones."""

    name = "comfyui-refused"

    @classmethod
    def detects(cls, model: nn.Module) -> bool:
        return refusal_of(type(model)) is not None

    def __init__(self, model: nn.Module, *args, **kwargs) -> None:
        raise TypeError(refusal_message(type(model)))
