"""`dype_rope.enable(pipe, height, width)`: DyPE on a diffusers pipeline's transformer, plus the flow-matching
scheduler's resolution shift chosen for the target size. `handle.remove()` undoes both exactly.

The shift. Flow-matching pipelines (FLUX, Qwen-Image, SD3 with dynamic shifting, HiDream, ...) compute a
`mu` from the image's token count and hand it to `scheduler.set_timesteps(..., mu=mu)`, which bends the
sigmas towards noise: sigma' = e^mu / (e^mu + 1 / sigma - 1). FLUX's formula is a line through
(base_image_seq_len, base_shift) and (max_image_seq_len, max_shift), extrapolated beyond: at 4096 x 4096 px
its mu is ~11.6 and almost every step sits at sigma ~ 1. Policies:

  "pinned": mu = max_shift, the value at the training resolution (what the DyPE authors and the ComfyUI node use);
  "linear": the line extrapolated to the target token count (diffusers' own calculate_shift);
  a float:  that mu.

How the pipeline is made to use it: each pipeline computes mu with its own formula (FLUX's line, CogView4's
square root, HiDream's constant), so rewriting the config values it reads would be exact for some pipelines
only. Instead this scheduler *instance* gets its own `set_timesteps` that passes the chosen mu whatever the
caller computed, and its config turns `use_dynamic_shifting` on (schedulers like SD3's default to a fixed
shift). Nothing outside this one scheduler object changes; remove() deletes the instance attribute, so the
class method shows through again, and puts back the very config object that was there.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

from .patching import PatchHandle, patch

SHIFT_POLICIES = ("pinned", "linear")

# Pipelines whose schedule does not depend on the image size (a fixed `shift`, UniPC or DPM-Solver flow sigmas, DDIM
# or Karras schedules): there is no resolution shift to pin, so enable() patches the transformer and leaves the
# scheduler as it is. Family rows declare theirs (adapters/families/) by qualified class name.
FIXED_SHIFT_PIPELINES: set[str] = set()


def keep_scheduler_shift(*pipeline_classes: str) -> None:
    """Declare pipelines ("package.module.Class") whose scheduler enable() leaves alone: their shift is fixed."""
    for name in pipeline_classes:
        if not (isinstance(name, str) and "." in name):
            raise TypeError(f"pipelines are declared by qualified name 'package.module.Class', got {name!r}")
    FIXED_SHIFT_PIPELINES.update(pipeline_classes)


def _fixed_shift(pipe: Any) -> bool:
    import dype_rope.adapters  # noqa: F401  (the family rows declare their pipelines on import)

    return any(f"{c.__module__}.{c.__qualname__}" in FIXED_SHIFT_PIPELINES for c in type(pipe).__mro__)


# Pipelines that run a second transformer on the same image grid (Ideogram 4's unconditional_transformer for
# classifier-free guidance): pipeline class ("package.module.Class") -> its attribute names. enable() patches
# each with the same settings; handle.remove() restores them all.
SECOND_TRANSFORMERS: dict[str, tuple[str, ...]] = {}


def patch_also(pipeline_class: str, *attributes: str) -> None:
    """Declare that enable() patches `pipe.<attribute>` too for pipelines of `pipeline_class` (qualified name)."""
    if not (isinstance(pipeline_class, str) and "." in pipeline_class):
        raise TypeError(f"pipelines are declared by qualified name 'package.module.Class', got {pipeline_class!r}")
    SECOND_TRANSFORMERS[pipeline_class] = tuple(attributes)


def _patch_others(pipe: Any, patch_kwargs: dict) -> Callable[[], None]:
    """Patch the pipeline's declared second transformers; returns the function that removes those patches."""
    names = [a for c in type(pipe).__mro__ for a in SECOND_TRANSFORMERS.get(f"{c.__module__}.{c.__qualname__}", ())]
    handles = []
    try:
        for name in dict.fromkeys(names):
            model = getattr(pipe, name, None)
            if model is not None:
                handles.append(patch(model, **patch_kwargs))
    except BaseException:
        for h in reversed(handles):
            h.remove()
        raise

    def undo() -> None:
        for h in reversed(handles):
            h.remove()

    return undo


# Pipelines whose resolution shift counts the video's tokens, frames included (calculate_shift on
# latent_num_frames * latent_height * latent_width): enable() knows no frame count, so the "linear" policy, which
# extrapolates that line from image tokens, would give a wrong mu there.
FRAME_COUNTED_SHIFT = {
    "diffusers.pipelines.ltx.pipeline_ltx.LTXPipeline",
    "diffusers.pipelines.ltx.pipeline_ltx_image2video.LTXImageToVideoPipeline",
    "diffusers.pipelines.ltx.pipeline_ltx_condition.LTXConditionPipeline",
    # LTX-2: calculate_shift(latents.shape[1]) on the packed video latents, frames included
    "diffusers.pipelines.ltx2.pipeline_ltx2.LTX2Pipeline",
    "diffusers.pipelines.ltx2.pipeline_ltx2_image2video.LTX2ImageToVideoPipeline",
    "diffusers.pipelines.ltx2.pipeline_ltx2_condition.LTX2ConditionPipeline",
    "diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora.LTX2InContextPipeline",
    "diffusers.pipelines.ltx2.pipeline_ltx2_hdr_lora.LTX2HDRPipeline",
}


def frame_counted(pipe: Any) -> bool:
    """Whether `pipe` is one of FRAME_COUNTED_SHIFT (or a subclass of one)."""
    return any(f"{c.__module__}.{c.__qualname__}" in FRAME_COUNTED_SHIFT for c in type(pipe).__mro__)



def linear_shift(image_seq_len: float, config: Any) -> float:
    """FLUX's resolution shift line (diffusers' calculate_shift), extrapolated past max_image_seq_len."""
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    intercept = config.base_shift - slope * config.base_image_seq_len
    return float(image_seq_len * slope + intercept)


def resolution_shift(shift: str | float, config: Any, image_seq_len: int) -> float:
    """The mu of a shift policy for an image of `image_seq_len` tokens under a scheduler `config`."""
    if isinstance(shift, bool) or not isinstance(shift, (str, int, float)):
        raise TypeError(f"shift must be one of {SHIFT_POLICIES} or a number mu, got {type(shift).__name__}")
    if not isinstance(shift, str):
        if not math.isfinite(shift):
            raise ValueError(f"shift mu must be finite, got {shift}")
        return float(shift)
    if shift not in SHIFT_POLICIES:
        raise ValueError(f"unknown shift policy {shift!r}: expected one of {SHIFT_POLICIES} or a number mu")
    shift_type = getattr(config, "time_shift_type", "exponential")
    if shift_type != "exponential":
        raise ValueError(
            f"the {shift!r} policy follows FLUX's exponential time shift, but this scheduler uses "
            f"time_shift_type={shift_type!r}; pass the shift as a number mu instead"
        )
    needed = ("base_shift", "max_shift") + (("base_image_seq_len", "max_image_seq_len") if shift == "linear" else ())
    missing = [k for k in needed if getattr(config, k, None) is None]
    if missing:
        raise ValueError(f"the scheduler config has no {', '.join(missing)}; pass the shift as a number mu instead")
    return float(config.max_shift) if shift == "pinned" else linear_shift(image_seq_len, config)


def image_tokens(pipe: Any, height: int, width: int) -> int:
    """Image tokens of a height x width px image: pixels / VAE factor / the latent pixels of one token.

    A token covers the transformer's patch_size latent pixels per side, or 2 where the pipeline packs 2 x 2
    latents itself (FLUX and Qwen-Image pipelines, `_pack_latents`).
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive whole number of pixels, got {value!r}")
    per_token = _row_pixels_per_token(pipe.transformer)  # a family-table row knows its own (Bria's packing)
    if per_token is None:
        # video pipelines name their spatial factor apart from the temporal one
        vae_factor = int(getattr(pipe, "vae_scale_factor_spatial", None) or getattr(pipe, "vae_scale_factor", 8))
        patch = getattr(getattr(pipe.transformer, "config", None), "patch_size", 1) or 1
        patch_px = int(patch[-1] if isinstance(patch, (tuple, list)) else patch)  # (frames, rows, columns): a side
        if hasattr(type(pipe), "_pack_latents"):
            patch_px = max(patch_px, 2)
        per_token = vae_factor * patch_px
    return (height // per_token) * (width // per_token)


def _row_pixels_per_token(transformer: Any) -> int | None:
    """The pixels per token a family-table row declares for this transformer (read off its pipeline: Bria's
    vae_scale_factor already counts the 2 x 2 packing, Krea 2 packs with the pipeline's own patch_size), or None
    for models without a row."""
    from .adapters import find_adapter
    from .adapters.table import TableAdapter

    try:
        adapter = find_adapter(transformer)
    except TypeError:
        return None
    return adapter.family.pixels_per_token if issubclass(adapter, TableAdapter) else None


def _check_scheduler(scheduler: Any) -> None:
    set_timesteps = getattr(scheduler, "set_timesteps", None)
    if set_timesteps is None or "mu" not in inspect.signature(set_timesteps).parameters:
        raise TypeError(
            f"enable() sets the resolution shift of flow-matching schedulers whose set_timesteps takes mu "
            f"(FlowMatchEulerDiscreteScheduler, ...); {type(scheduler).__name__} does not"
        )
    if "set_timesteps" in vars(scheduler):
        raise RuntimeError(f"this {type(scheduler).__name__} already has its shift set (dype_rope.enable twice?)")
    if not hasattr(scheduler, "register_to_config") or not hasattr(scheduler, "_internal_dict"):
        raise TypeError(f"{type(scheduler).__name__} has no diffusers config to set use_dynamic_shifting on")


class _PinnedSetTimesteps:
    """A scheduler instance's set_timesteps with mu pinned. A deepcopy of the scheduler (the LTX-2 pipelines copy
    theirs for the audio latents) gets one that sets the copy's schedule: a plain closure would be shared by the
    copy (deepcopy keeps functions as they are) and set the original's schedule instead, leaving the copy's unset."""

    def __init__(self, scheduler: Any, mu: float) -> None:
        self.scheduler, self.mu = scheduler, mu
        self.stock = scheduler.set_timesteps
        self.signature = inspect.signature(self.stock)
        functools.update_wrapper(self, self.stock)  # keeps the signature diffusers' retrieve_timesteps inspects

    def __call__(self, *args, **kwargs):
        bound = self.signature.bind(*args, **kwargs)
        bound.arguments["mu"] = self.mu
        return self.stock(*bound.args, **bound.kwargs)

    def __deepcopy__(self, memo: dict) -> "_PinnedSetTimesteps":
        # deepcopy records the scheduler's copy in memo before it copies the scheduler's attributes
        return _PinnedSetTimesteps(memo.get(id(self.scheduler), self.scheduler), self.mu)


def pin_shift(scheduler: Any, mu: float) -> Callable[[], None]:
    """Make `scheduler` shift every schedule it sets by `mu`; returns the function that undoes it."""
    _check_scheduler(scheduler)
    config = scheduler._internal_dict
    scheduler.register_to_config(use_dynamic_shifting=True)
    scheduler.set_timesteps = _PinnedSetTimesteps(scheduler, mu)

    def undo() -> None:
        vars(scheduler).pop("set_timesteps", None)
        scheduler._internal_dict = config

    return undo


class PipelineHandle:
    """Undoes one enable(): `handle.remove()`, or use it as a context manager."""

    def __init__(
        self, transformer: PatchHandle, mu: float | None, image_seq_len: int, undo_shift: Callable[[], None]
    ) -> None:
        self.transformer = transformer
        self.mu = mu
        self.image_seq_len = image_seq_len
        self._undo_shift: Callable[[], None] | None = undo_shift

    @property
    def active(self) -> bool:
        return self._undo_shift is not None

    def remove(self) -> None:
        """Restore the scheduler and the transformer exactly; calling it again does nothing."""
        if self._undo_shift is None:
            return
        undo, self._undo_shift = self._undo_shift, None
        try:
            undo()
        finally:
            self.transformer.remove()

    def __enter__(self) -> "PipelineHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        mu = "the pipeline's own" if self.mu is None else f"{self.mu:.4g}"  # None: no resolution shift to pin
        return f"PipelineHandle(mu={mu}, image_seq_len={self.image_seq_len}, {self.transformer!r}, {state})"


def enable(pipe: Any, height: int, width: int, shift: str | float = "pinned", **patch_kwargs: Any) -> PipelineHandle:
    """DyPE for sampling `pipe` at height x width px: patches pipe.transformer and pins the scheduler's shift.

    shift:        "pinned" (mu = max_shift, default), "linear" (the pipeline's line extrapolated to the target
                  token count) or a number mu.
    patch_kwargs: passed to dype_rope.patch (method, dynamic, base_grid, base_resolution, lambda_s, mscale,
                  start_sigma, ...).
    """
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise TypeError(f"{type(pipe).__name__} has no transformer; enable() works on diffusion-transformer pipelines")
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        raise TypeError(f"{type(pipe).__name__} has no scheduler")
    tokens = image_tokens(pipe, height, width)
    if _fixed_shift(pipe):  # mu None: the scheduler keeps its own, resolution-independent schedule
        if shift != "pinned":
            raise ValueError(
                f"{type(pipe).__name__} has no resolution shift to set (its schedule does not depend on the image size); "
                f"leave shift at its default instead of {shift!r}"
            )
        handle = patch(transformer, **patch_kwargs)
        try:
            undo_others = _patch_others(pipe, patch_kwargs)
        except BaseException:
            handle.remove()
            raise
        return PipelineHandle(handle, None, tokens, undo_others)
    _check_scheduler(scheduler)
    if shift == "linear" and frame_counted(pipe):
        raise ValueError(
            f"{type(pipe).__name__}'s resolution shift counts the video's frames too, which enable() does not know; "
            "use shift='pinned' or pass the shift as a number mu"
        )
    mu = resolution_shift(shift, scheduler.config, tokens)
    handle = patch(transformer, **patch_kwargs)
    # a pipeline's own audio scheduler (LTX-2's condition, IC-LoRA and HDR pipelines) takes the video's mu there
    audio = getattr(pipe, "audio_scheduler", None)
    schedulers = [scheduler] + ([audio] if audio is not None and audio is not scheduler else [])
    undos: list[Callable[[], None]] = []

    def undo() -> None:  # the shifts, then the other transformers; the transformer's patch is the handle's own
        for fn in reversed(undos):
            fn()

    try:
        undos.append(_patch_others(pipe, patch_kwargs))
        for s in schedulers:
            undos.append(pin_shift(s, mu))
    except BaseException:
        undo()
        handle.remove()
        raise
    return PipelineHandle(handle, mu, tokens, undo)
