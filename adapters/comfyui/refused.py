"""ComfyUI diffusion models DyPE refuses, each with the reason (qualified class name -> why), and the ones with no
position encoding at all (nothing to rescale; the coverage report leaves them out).

DyPE rescales the frequencies of a rotary encoding axis by axis, by how far the generated image's token grid
exceeds the grid the model was trained on. A model is refused here when its encoding has no such axis: learned
absolute positions (there is no frequency to rescale, only a trained table), frequencies learned as a mix of
axes, a 1-D sequence (audio), or a 3-D asset's point set. The reason is raised when the user patches it.
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
