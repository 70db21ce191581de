"""The compatibility node (node id "DyPE_Compat"): ComfyUI-DyPE's inputs, names, types and defaults, mapped onto
dype_rope's settings, so that replacing the node type in a ComfyUI-DyPE (v2.3.0) workflow keeps its results.

The mapping (docs/comfyui.md, "Coming from ComfyUI-DyPE"):

  method=vision_yarn               -> vision_yarn, thresholds ** kappa, temperature from dype_start_sigma
  method=yarn, yarn_alt_scaling on -> yarn, thresholds ** kappa, each axis its own ratio, m = 0.1 ln s + 1
  method=yarn, yarn_alt_scaling off-> yarn, thresholds ** kappa, the larger ratio on both axes, m = 1 + 0.1 ln(s)/sqrt(s)
  method=ntk                       -> ntk, the larger ratio on both axes
  method=base                      -> static ntk, the larger ratio on both axes
  enable_dype -> dynamic, dype_scale -> lambda_s, dype_exponent -> lambda_t
  base_resolution -> the base grid, base_resolution // (pixels per token) tokens a side
  width, height, base_shift, max_shift -> ComfyUI's ModelSamplingFlux shift for width x height, above the
                                          base resolution only

Where ComfyUI-DyPE is wrong this node does what the DyPE node does (docs/comfyui.md lists every difference):
the image is measured from the latent (never the caption's ids), frequencies are float64, YaRN's ramp never
inverts, nothing is written onto the shared model, and at or below the base resolution the model samples as
stock, noise schedule included.
"""

from __future__ import annotations

import math

from comfy_api.latest import io

from .node import NodeInputError, check_model, comfy_line_mu, flux_sampling, make_config, sampling_with_shift
from .patcher import patch_model_patcher

NODE_ID = "DyPE_Compat"
COMFYUI_DYPE_METHODS = ("vision_yarn", "yarn", "ntk", "base")
MODEL_TYPES = ("auto", "flux", "nunchaku", "qwen", "zimage")
# the dype_rope ComfyUI families (adapters/comfyui/families.py) each model_type can name
MODEL_TYPE_FAMILIES = {
    "flux": ("flux", "chroma"),
    "nunchaku": ("flux", "chroma"),  # Nunchaku's FLUX: patched where its diffusion model is ComfyUI's own class
    "qwen": ("qwen_image",),
    "zimage": ("lumina2",),
}
MAX_PIXELS = 16384


def comfyui_dype_settings(method: str, yarn_alt_scaling: bool, enable_dype: bool, dype_scale: float,
                          dype_exponent: float, dype_start_sigma: float) -> tuple[dict, str]:
    """(DyPEConfig settings, aspect) of a ComfyUI-DyPE method."""
    dynamic = {"dynamic": enable_dype, "lambda_s": dype_scale, "lambda_t": dype_exponent}
    if method == "vision_yarn":
        start = dype_start_sigma if enable_dype else 1.0  # the static method's temperature never decays
        return dict(method="vision_yarn", yarn_modulation="power", mscale="log", start_sigma=start, **dynamic), "per-axis"
    if method == "yarn":
        if yarn_alt_scaling:
            return dict(method="yarn", yarn_modulation="power", mscale="log", **dynamic), "per-axis"
        return dict(method="yarn", yarn_modulation="power", mscale="log_sqrt", **dynamic), "isotropic"
    if method == "ntk":
        return dict(method="ntk", **dynamic), "isotropic"
    if method == "base":
        return dict(method="ntk", dynamic=False), "isotropic"
    raise NodeInputError(f"method must be one of {COMFYUI_DYPE_METHODS}, got {method!r}")


def _check(name: str, value, kind: type, lower: float, upper: float | None = None):
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if ok:
        ok = math.isfinite(value) and value >= lower and (upper is None or value <= upper)
    if not ok:
        bound = f"from {lower} to {upper}" if upper is not None else f">= {lower}"
        noun = "a whole number" if kind is int else "a number"
        raise NodeInputError(f"{name} must be {noun} {bound}, got {value!r}")
    return value


def comfyui_dype_model(
    model,
    width: int = 1024,
    height: int = 1024,
    model_type: str = "auto",
    method: str = "vision_yarn",
    yarn_alt_scaling: bool = False,
    enable_dype: bool = True,
    dype_scale: float = 2.0,
    dype_exponent: float = 2.0,
    base_resolution: int = 1024,
    dype_start_sigma: float = 1.0,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
):
    """What DyPE_Compat does, callable without the node machinery (tests, scripts)."""
    _, adapter_cls, ppt = check_model(model)
    if model_type not in MODEL_TYPES:
        raise NodeInputError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    family = adapter_cls.family.name
    if model_type != "auto" and family not in MODEL_TYPE_FAMILIES[model_type]:
        raise NodeInputError(
            f"model_type {model_type!r} does not match this model, a {family} model ({adapter_cls.family.note}); "
            "set model_type to 'auto'"
        )
    for name, flag in (("yarn_alt_scaling", yarn_alt_scaling), ("enable_dype", enable_dype)):
        if not isinstance(flag, bool):
            raise NodeInputError(f"{name} must be a bool, got {flag!r}")
    _check("width", width, int, 16, MAX_PIXELS)
    _check("height", height, int, 16, MAX_PIXELS)
    _check("base_resolution", base_resolution, int, ppt, MAX_PIXELS)
    _check("dype_scale", dype_scale, float, 0.0)
    if dype_scale == 0:
        raise NodeInputError("dype_scale must be > 0 (kappa(t) = dype_scale * t ** dype_exponent)")
    _check("dype_exponent", dype_exponent, float, 0.0)
    _check("dype_start_sigma", dype_start_sigma, float, 0.0, 1.0)
    _check("base_shift", base_shift, float, 0.0)
    _check("max_shift", max_shift, float, 0.0)
    settings, aspect = comfyui_dype_settings(method, yarn_alt_scaling, enable_dype, float(dype_scale),
                                             float(dype_exponent), float(dype_start_sigma))
    cfg = make_config(**settings)
    side = base_resolution // ppt  # ComfyUI-DyPE's base patch count: the pixels a token covers, rounded down
    patched = patch_model_patcher(model, cfg, (side, side), aspect)
    # The noise shift: ComfyUI's line for width x height (as ComfyUI-DyPE), only where DyPE extrapolates and
    # only for models that sample with a resolution shift (FLUX-type); at or below the base resolution the
    # model keeps the schedule it samples with.
    above = width > side * ppt or height > side * ppt
    if above and flux_sampling(patched) is not None:
        mu = comfy_line_mu(width * height / ppt**2, base_shift, max_shift)
        patched.add_object_patch("model_sampling", sampling_with_shift(patched, mu))
    return patched


class DyPECompat(io.ComfyNode):
    """ComfyUI-DyPE's node, input for input: swap the node type in a ComfyUI-DyPE workflow and keep its results."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="DyPE (ComfyUI-DyPE settings)",
            category="model_patches",
            description="DyPE with ComfyUI-DyPE's inputs and defaults (vision_yarn, yarn, ntk, base), computed by "
            "dype_rope: same results on FLUX, never written onto the shared model, stock at or below the base "
            "resolution.",
            inputs=[
                io.Model.Input("model", tooltip="the model to patch; it is cloned, never changed"),
                io.Int.Input("width", default=1024, min=16, max=MAX_PIXELS, step=8,
                             tooltip="target image width (the noise shift; the scale is read from the latent)"),
                io.Int.Input("height", default=1024, min=16, max=MAX_PIXELS, step=8,
                             tooltip="target image height (the noise shift; the scale is read from the latent)"),
                io.Combo.Input("model_type", options=list(MODEL_TYPES), default="auto",
                               tooltip="auto: read from the model; otherwise checked against it"),
                io.Combo.Input("method", options=list(COMFYUI_DYPE_METHODS), default="vision_yarn",
                               tooltip="vision_yarn (aspect-aware YaRN), yarn, ntk, or base (static NTK)"),
                io.Boolean.Input("yarn_alt_scaling", default=False,
                                 tooltip="yarn only: each axis its own ratio and temperature 0.1 ln s + 1"),
                io.Boolean.Input("enable_dype", default=True, label_on="Enabled", label_off="Disabled",
                                 tooltip="on: DyPE; off: the static method"),
                io.Float.Input("dype_scale", default=2.0, min=0.0, max=100.0, step=0.1, optional=True,
                               tooltip="lambda_s: kappa(t) = dype_scale * t ** dype_exponent"),
                io.Float.Input("dype_exponent", default=2.0, min=0.0, max=1000.0, step=0.1, optional=True,
                               tooltip="lambda_t"),
                io.Int.Input("base_resolution", default=1024, min=16, max=MAX_PIXELS, step=8,
                             tooltip="the model's native resolution in pixels"),
                io.Float.Input("dype_start_sigma", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="vision_yarn: its attention temperature decays below this sigma"),
                io.Float.Input("base_shift", default=0.5, min=0.0, max=100.0, step=0.01, optional=True,
                               tooltip="noise shift mu at 256 tokens"),
                io.Float.Input("max_shift", default=1.15, min=0.0, max=100.0, step=0.01, optional=True,
                               tooltip="noise shift mu at 4096 tokens"),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, width=1024, height=1024, model_type="auto", method="vision_yarn", yarn_alt_scaling=False,
                enable_dype=True, dype_scale=2.0, dype_exponent=2.0, base_resolution=1024, dype_start_sigma=1.0,
                base_shift=0.5, max_shift=1.15) -> io.NodeOutput:
        return io.NodeOutput(
            comfyui_dype_model(model, width, height, model_type, method, yarn_alt_scaling, enable_dype, dype_scale,
                               dype_exponent, base_resolution, dype_start_sigma, base_shift, max_shift)
        )
