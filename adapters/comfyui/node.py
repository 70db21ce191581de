"""The DyPE node for ComfyUI (node id "DyPE"): MODEL in, a DyPE clone of it out. Its sibling with ComfyUI-DyPE's
inputs, "DyPE_Compat", lives in node_compat.py and shares the checks and the noise shift below.

Imported only inside ComfyUI (by the repository's top-level __init__.py, which ComfyUI loads from
custom_nodes/): it builds on comfy_api's node schema. Everything the node does to the model goes through
`patch_model_patcher` (object patches and an apply_model wrapper on a clone) and, for the optional noise
shift, a `model_sampling` object patch like ComfyUI's own ModelSamplingFlux node makes.
"""

from __future__ import annotations

import math

from comfy_api.latest import ComfyExtension, io

from dype_rope.config import MSCALES, DyPEConfig

from .adapter import comfy_adapter_class, patch_size_hw
from .patcher import patch_model_patcher

ASPECTS = ("per-axis", "isotropic")
SHIFTS = ("pinned", "linear")
NODE_METHODS = ("yarn", "vision_yarn", "ntk", "pi", "none")
MODULATIONS = ("default", "multiply", "power")  # "default": the method's own (yarn multiply, vision_yarn power)
# ComfyUI's ModelSamplingFlux line: mu = base_shift at 256 tokens, max_shift at 4096 (1024 x 1024 px)
LINE_TOKENS = (256.0, 4096.0)
BASE_SHIFT, MAX_SHIFT = 0.5, 1.15
MAX_PIXELS = 16384
# what a row's model_sampling mix-in (families.ComfyFamily.sampling) is, for the node's message; others are flows
SAMPLINGS = {"ModelSamplingDiscrete": "a discrete DDPM model_sampling (DyPE's t = the model's timestep / 1000)"}


class NodeInputError(ValueError):
    """A node input that makes no sense; the message names the input."""


def comfy_line_mu(tokens: float, base_shift: float = BASE_SHIFT, max_shift: float = MAX_SHIFT) -> float:
    """ComfyUI's ModelSamplingFlux line through (256 tokens, base_shift) and (4096 tokens, max_shift), extrapolated
    (at 4096 px nearly every step then sits at sigma ~ 1)."""
    (x1, x2) = LINE_TOKENS
    slope = (max_shift - base_shift) / (x2 - x1)
    return base_shift + slope * (tokens - x1)


def flux_mu(tokens: float, policy: str, base_tokens: float, stock_mu: float, base_shift: float = BASE_SHIFT,
            max_shift: float = MAX_SHIFT) -> float:
    """The resolution shift mu for `tokens` image tokens.

    "linear": ComfyUI's line (base_shift, max_shift), extrapolated: what ModelSamplingFlux and ComfyUI-DyPE give.
    "pinned": the model's own shift `stock_mu` from the base grid up; below it the line from (256 tokens,
    base_shift) to (base_tokens, stock_mu). At its native resolution a model keeps the shift it samples with
    (FLUX.1 1.15 at 4096 tokens, Qwen-Image 1.15 at 6889)."""
    if policy == "linear":
        return comfy_line_mu(tokens, base_shift, max_shift)
    x1 = LINE_TOKENS[0]
    if tokens >= base_tokens or base_tokens <= x1:
        return stock_mu
    return base_shift + (stock_mu - base_shift) * (tokens - x1) / (base_tokens - x1)


def flux_sampling(model_patcher):
    """The patcher's ModelSamplingFlux, or None when it samples otherwise (a constant shift)."""
    import comfy.model_sampling as ms

    current = model_patcher.get_model_object("model_sampling")
    return current if isinstance(current, ms.ModelSamplingFlux) else None


def sampling_with_shift(model_patcher, mu: float):
    """A model_sampling object of the model's own flow type with shift mu, as ComfyUI's ModelSamplingFlux node makes."""
    import comfy.model_sampling as ms

    class ModelSamplingDyPE(ms.ModelSamplingFlux, ms.CONST):
        pass

    sampling = ModelSamplingDyPE(model_patcher.model.model_config)
    sampling.set_parameters(shift=mu)
    return sampling


def shifted_sampling(model_patcher, width: int, height: int, policy: str, base_grid: tuple[int, int], ppt: int,
                     base_shift: float = BASE_SHIFT, max_shift: float = MAX_SHIFT):
    """A model_sampling object for the model's own flow type with the resolution shift of width x height px."""
    current = flux_sampling(model_patcher)
    if current is None:
        sampling = model_patcher.get_model_object("model_sampling")
        raise NodeInputError(
            f"width/height set a FLUX-style resolution shift, but this model samples with "
            f"{type(sampling).__mro__[1].__name__}; leave width and height at 0 (set its shift with ComfyUI's "
            "ModelSampling nodes instead)"
        )
    tokens = width * height / ppt**2  # ComfyUI's ModelSamplingFlux: width * height / (8 * 8 * 2 * 2)
    mu = flux_mu(tokens, policy, base_grid[0] * base_grid[1], float(current.shift), base_shift, max_shift)
    return sampling_with_shift(model_patcher, mu)


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


def _check_number(name: str, value, lower: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NodeInputError(f"{name} must be a finite number, got {value!r}")
    if lower is not None and value < lower:
        raise NodeInputError(f"{name} must be >= {lower}, got {value}")
    return float(value)


def check_model(model):
    """(diffusion model, its adapter class, image pixels per token side) of a model DyPE can patch, or a
    NodeInputError saying why not."""
    diffusion_model = model.get_model_object("diffusion_model")
    try:
        adapter_cls = comfy_adapter_class(diffusion_model)
    except TypeError as err:
        raise NodeInputError(str(err)) from None
    sampling = model.get_model_object("model_sampling")
    if not any(cls.__name__ == adapter_cls.family.sampling for cls in type(sampling).__mro__):
        # DyPE reads the diffusion time (1 = noise) off sigma by the family's convention (families.TIMES), which
        # holds for the family's own model_sampling only
        wanted = SAMPLINGS.get(adapter_cls.family.sampling, "a flow-matching model_sampling (sigma = diffusion time)")
        raise NodeInputError(
            f"DyPE needs {wanted}, this model has {type(sampling).__name__}; remove the ModelSampling node that "
            "changed it"
        )
    return diffusion_model, adapter_cls, pixels_per_token(model, diffusion_model, adapter_cls)


def make_config(**settings) -> DyPEConfig:
    try:
        return DyPEConfig(**settings)
    except (TypeError, ValueError) as err:
        raise NodeInputError(str(err)) from None


def dype_model(
    model,
    method: str = "yarn",
    base_resolution: int = 0,
    dynamic: bool = True,
    lambda_s: float = 0.0,
    lambda_t: float = -1.0,
    aspect: str = "per-axis",
    yarn_modulation: str = "default",
    width: int = 0,
    height: int = 0,
    shift: str = "pinned",
    mscale: str = "log",
    start_sigma: float = 1.0,
    base_shift: float = BASE_SHIFT,
    max_shift: float = MAX_SHIFT,
):
    """What the node does, callable without the node machinery (tests, scripts)."""
    _, adapter_cls, ppt = check_model(model)
    base_px = _check_whole("base_resolution", base_resolution, ppt)
    for name, value in (("width", width), ("height", height)):
        _check_whole(name, value)
    if (width == 0) != (height == 0):
        raise NodeInputError(f"set both width and height for the noise shift, or neither (got {width} x {height})")
    if aspect not in ASPECTS:
        raise NodeInputError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    if shift not in SHIFTS:
        raise NodeInputError(f"shift must be one of {SHIFTS}, got {shift!r}")
    if yarn_modulation not in MODULATIONS:
        raise NodeInputError(f"yarn_modulation must be one of {MODULATIONS}, got {yarn_modulation!r}")
    for name, value in (("lambda_s", lambda_s), ("lambda_t", lambda_t), ("base_shift", base_shift),
                        ("max_shift", max_shift)):
        _check_number(name, value)
    if lambda_s < 0:
        raise NodeInputError(f"lambda_s must be > 0, or 0 for the method's default; got {lambda_s}")
    if lambda_t < 0 and lambda_t != -1:
        raise NodeInputError(f"lambda_t must be >= 0, or -1 for the method's default; got {lambda_t}")
    cfg = make_config(
        method=method,
        dynamic=dynamic,
        lambda_s=lambda_s or None,
        lambda_t=None if lambda_t == -1 else lambda_t,
        yarn_modulation=None if yarn_modulation == "default" else yarn_modulation,
        mscale=mscale,
        start_sigma=start_sigma,
    )
    base_grid = (base_px // ppt, base_px // ppt) if base_px else adapter_cls.family.base_grid
    patched = patch_model_patcher(model, cfg, base_grid, aspect)
    if width:
        sampling = shifted_sampling(patched, width, height, shift, base_grid, ppt, base_shift, max_shift)
        patched.add_object_patch("model_sampling", sampling)
    return patched


def _advanced(make, name: str, **kwargs):
    """An advanced input that may be left out: a workflow without it validates and gets the default."""
    return make(name, advanced=True, optional=True, **kwargs)


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
                io.Combo.Input("method", options=list(NODE_METHODS), default="yarn",
                               tooltip="yarn (Dy-YaRN, recommended), vision_yarn (ComfyUI-DyPE's Vision-YaRN), "
                               "ntk, pi, or none (plain RoPE)"),
                io.Int.Input("base_resolution", default=0, min=0, max=MAX_PIXELS, step=16,
                             tooltip="the model's training resolution in pixels; 0 = the model's native one"),
                io.Boolean.Input("dynamic", default=True, tooltip="on: DyPE; off: the static method"),
                _advanced(io.Float.Input, "lambda_s", default=0.0, min=0.0, max=100.0, step=0.05,
                          tooltip="kappa(t) = lambda_s * t ** lambda_t; 0 = the method's default"),
                _advanced(io.Float.Input, "lambda_t", default=-1.0, min=-1.0, max=100.0, step=0.05,
                          tooltip="-1 = the method's default"),
                _advanced(io.Combo.Input, "aspect", options=list(ASPECTS), default="per-axis",
                          tooltip="per-axis: each axis its own ratio; isotropic: the larger on both"),
                _advanced(io.Combo.Input, "yarn_modulation", options=list(MODULATIONS), default="default",
                          tooltip="default: the method's own (yarn multiply, vision_yarn power); multiply: the "
                          "paper; power: ComfyUI-DyPE's thresholds ** kappa"),
                _advanced(io.Int.Input, "width", default=0, min=0, max=MAX_PIXELS, step=16,
                          tooltip="output width for the noise shift; 0 = leave ComfyUI's shift alone"),
                _advanced(io.Int.Input, "height", default=0, min=0, max=MAX_PIXELS, step=16,
                          tooltip="output height for the noise shift; 0 = leave ComfyUI's shift alone"),
                _advanced(io.Combo.Input, "shift", options=list(SHIFTS), default="pinned",
                          tooltip="pinned: the model's own shift from the base resolution up; linear: ComfyUI's "
                          "base_shift / max_shift line extrapolated (ComfyUI-DyPE's shift)"),
                _advanced(io.Combo.Input, "mscale", options=list(MSCALES), default="log",
                          tooltip="YaRN's attention temperature: log = 0.1 ln s + 1, log_sqrt = 1 + 0.1 ln(s) / "
                          "sqrt(s)"),
                _advanced(io.Float.Input, "start_sigma", default=1.0, min=0.0, max=1.0, step=0.01,
                          tooltip="vision_yarn: its temperature decays below this sigma (1 = from the first step)"),
                _advanced(io.Float.Input, "base_shift", default=BASE_SHIFT, min=0.0, max=100.0, step=0.01,
                          tooltip="mu at 256 tokens (the low end of both shift policies)"),
                _advanced(io.Float.Input, "max_shift", default=MAX_SHIFT, min=0.0, max=100.0, step=0.01,
                          tooltip="mu at 4096 tokens (shift=linear)"),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, method, base_resolution, dynamic, lambda_s=0.0, lambda_t=-1.0, aspect="per-axis",
                yarn_modulation="default", width=0, height=0, shift="pinned", mscale="log", start_sigma=1.0,
                base_shift=BASE_SHIFT, max_shift=MAX_SHIFT) -> io.NodeOutput:
        return io.NodeOutput(
            dype_model(model, method, base_resolution, dynamic, lambda_s, lambda_t, aspect, yarn_modulation,
                       width, height, shift, mscale, start_sigma, base_shift, max_shift)
        )


class DyPEExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .node_compat import DyPECompat

        return [DyPE, DyPECompat]
