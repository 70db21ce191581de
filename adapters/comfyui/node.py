"""The DyPE node for ComfyUI (node id "DyPE"): MODEL in, a DyPE clone of it out.

Imported only inside ComfyUI (by the repository's top-level __init__.py, which ComfyUI loads from
custom_nodes/): it builds on comfy_api's node schema. Everything the node does to the model goes through
`patch_model_patcher` (object patches and an apply_model wrapper on a clone) and, for the optional noise
shift, a `model_sampling` object patch like ComfyUI's own ModelSamplingFlux node makes.
"""

from __future__ import annotations

import math

from comfy_api.latest import ComfyExtension, io

from dype_rope.config import METHODS, YARN_MODULATIONS, DyPEConfig

from .adapter import comfy_adapter_class, patch_size_hw
from .patcher import patch_model_patcher

ASPECTS = ("per-axis", "isotropic")
SHIFTS = ("pinned", "linear")
# ComfyUI's ModelSamplingFlux line: mu = base_shift at 256 tokens, max_shift at 4096 (1024 x 1024 px)
FLUX_SHIFT_LINE = ((256.0, 0.5), (4096.0, 1.15))
MAX_PIXELS = 16384


class NodeInputError(ValueError):
    """A node input that makes no sense; the message names the input."""


def flux_mu(tokens: float, policy: str, base_tokens: float) -> float:
    """ComfyUI's resolution shift mu for `tokens` image tokens. "linear": its line, extrapolated (at 4096 px
    nearly every step sits at sigma ~ 1); "pinned": the line up to the base grid's token count, flat above."""
    (x1, y1), (x2, y2) = FLUX_SHIFT_LINE
    if policy == "pinned":
        tokens = min(tokens, base_tokens)
    return y1 + (y2 - y1) * (tokens - x1) / (x2 - x1)


def shifted_sampling(model_patcher, width: int, height: int, policy: str, base_grid: tuple[int, int], ppt: int):
    """A model_sampling object for the model's own flow type with the resolution shift of width x height px."""
    import comfy.model_sampling as ms

    current = model_patcher.get_model_object("model_sampling")
    if not isinstance(current, ms.ModelSamplingFlux):
        raise NodeInputError(
            f"width/height set a FLUX-style resolution shift, but this model samples with "
            f"{type(current).__mro__[1].__name__}; leave width and height at 0 (set its shift with ComfyUI's "
            "ModelSampling nodes instead)"
        )
    mu = flux_mu((width // ppt) * (height // ppt), policy, base_grid[0] * base_grid[1])

    class ModelSamplingDyPE(ms.ModelSamplingFlux, ms.CONST):
        pass

    sampling = ModelSamplingDyPE(model_patcher.model.model_config)
    sampling.set_parameters(shift=mu)
    return sampling


def pixels_per_token(model_patcher, diffusion_model, adapter_cls) -> int:
    """Image pixels per token side: the latent format's downscale times the patch (FLUX.2's 16 x 1, Wan 2.2's
    16 x 2), the family's usual value when the model does not say."""
    ratio = getattr(getattr(model_patcher.model, "latent_format", None), "spacial_downscale_ratio", None)
    if not isinstance(ratio, int):
        return adapter_cls.pixels_per_token
    return ratio * patch_size_hw(diffusion_model, adapter_cls.family)[0]


def _check_whole(name: str, value, multiple: int = 1, upper: int = MAX_PIXELS) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > upper:
        raise NodeInputError(f"{name} must be a whole number of pixels from 0 to {upper}, got {value!r}")
    if value % multiple:
        raise NodeInputError(f"{name} {value} px is not a multiple of the model's {multiple} px per token")
    return value


def dype_model(
    model,
    method: str = "yarn",
    base_resolution: int = 0,
    dynamic: bool = True,
    lambda_s: float = 0.0,
    lambda_t: float = -1.0,
    aspect: str = "per-axis",
    yarn_modulation: str = "multiply",
    width: int = 0,
    height: int = 0,
    shift: str = "pinned",
):
    """What the node does, callable without the node machinery (tests, scripts)."""
    diffusion_model = model.get_model_object("diffusion_model")
    try:
        adapter_cls = comfy_adapter_class(diffusion_model)
    except TypeError as err:
        raise NodeInputError(str(err)) from None
    sampling = model.get_model_object("model_sampling")
    if not any(cls.__name__ == adapter_cls.family.sampling for cls in type(sampling).__mro__):
        # DyPE reads the diffusion time (1 = noise) off sigma by the family's convention (families.TIMES), which
        # holds for the family's own model_sampling only
        raise NodeInputError(
            f"DyPE needs a flow-matching model_sampling (sigma = diffusion time), this model has "
            f"{type(sampling).__name__}; remove the ModelSampling node that changed it"
        )
    ppt = pixels_per_token(model, diffusion_model, adapter_cls)
    base_px = _check_whole("base_resolution", base_resolution, ppt)
    for name, value in (("width", width), ("height", height)):
        _check_whole(name, value)
    if (width == 0) != (height == 0):
        raise NodeInputError(f"set both width and height for the noise shift, or neither (got {width} x {height})")
    if aspect not in ASPECTS:
        raise NodeInputError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    if shift not in SHIFTS:
        raise NodeInputError(f"shift must be one of {SHIFTS}, got {shift!r}")
    for name, value in (("lambda_s", lambda_s), ("lambda_t", lambda_t)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise NodeInputError(f"{name} must be a finite number, got {value!r}")
    if lambda_s < 0:
        raise NodeInputError(f"lambda_s must be > 0, or 0 for the method's default; got {lambda_s}")
    if lambda_t < 0 and lambda_t != -1:
        raise NodeInputError(f"lambda_t must be >= 0, or -1 for the method's default; got {lambda_t}")
    try:
        cfg = DyPEConfig(
            method=method,
            dynamic=dynamic,
            lambda_s=lambda_s or None,
            lambda_t=None if lambda_t == -1 else lambda_t,
            yarn_modulation=yarn_modulation,
        )
    except (TypeError, ValueError) as err:
        raise NodeInputError(str(err)) from None
    base_grid = (base_px // ppt, base_px // ppt) if base_px else adapter_cls.family.base_grid
    patched = patch_model_patcher(model, cfg, base_grid, aspect)
    if width:
        patched.add_object_patch("model_sampling", shifted_sampling(patched, width, height, shift, base_grid, ppt))
    return patched


class DyPE(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DyPE",
            display_name="DyPE (Dynamic Position Extrapolation)",
            category="model_patches",
            description="Generate far above the model's training resolution: the RoPE position encoding is "
            "rescaled with the diffusion time (arXiv 2510.20766). At or below the base resolution the model is "
            "unchanged.",
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("method", options=list(METHODS[::-1]), default="yarn",
                               tooltip="yarn (Dy-YaRN, recommended), ntk, pi, or none (plain RoPE)"),
                io.Int.Input("base_resolution", default=0, min=0, max=MAX_PIXELS, step=16,
                             tooltip="the model's training resolution in pixels; 0 = the model's native one"),
                io.Boolean.Input("dynamic", default=True, tooltip="on: DyPE; off: the static method"),
                io.Float.Input("lambda_s", default=0.0, min=0.0, max=100.0, step=0.05, advanced=True,
                               tooltip="kappa(t) = lambda_s * t ** lambda_t; 0 = the method's default"),
                io.Float.Input("lambda_t", default=-1.0, min=-1.0, max=100.0, step=0.05, advanced=True,
                               tooltip="-1 = the method's default"),
                io.Combo.Input("aspect", options=list(ASPECTS), default="per-axis", advanced=True,
                               tooltip="per-axis: each axis its own ratio; isotropic: the larger on both"),
                io.Combo.Input("yarn_modulation", options=list(YARN_MODULATIONS), default="multiply", advanced=True,
                               tooltip="multiply: the paper; power: the older ComfyUI-DyPE formula"),
                io.Int.Input("width", default=0, min=0, max=MAX_PIXELS, step=16, advanced=True,
                             tooltip="output width for the noise shift; 0 = leave ComfyUI's shift alone"),
                io.Int.Input("height", default=0, min=0, max=MAX_PIXELS, step=16, advanced=True,
                             tooltip="output height for the noise shift; 0 = leave ComfyUI's shift alone"),
                io.Combo.Input("shift", options=list(SHIFTS), default="pinned", advanced=True,
                               tooltip="pinned: the shift of the base resolution above it; linear: ComfyUI's "
                               "line extrapolated"),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, method, base_resolution, dynamic, lambda_s=0.0, lambda_t=-1.0, aspect="per-axis",
                yarn_modulation="multiply", width=0, height=0, shift="pinned") -> io.NodeOutput:
        return io.NodeOutput(
            dype_model(model, method, base_resolution, dynamic, lambda_s, lambda_t, aspect, yarn_modulation,
                       width, height, shift)
        )


class DyPEExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [DyPE]
