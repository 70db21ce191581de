"""`dype-rope generate`: sample a diffusers pipeline with DyPE, offline, and save the image with its settings.

The pipeline is loaded from a local folder (or a model id already in the local cache; nothing is
downloaded), `dype_rope.enable(pipe, height, width, ...)` patches its transformer and sets the scheduler
shift for the target size, and the PNG carries the full settings as text chunks ("dype_rope": JSON), so an
image always says how it was made. `--compare` renders the same seed without DyPE and with the static
method too, and writes a labelled side-by-side grid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from dype_rope import __version__

from .errors import UsageError, check_writable, resolve_device
from .files import write_atomically

_NAMES = {"pi": "PI", "ntk": "NTK", "yarn": "YaRN", "none": "plain RoPE"}


def load_pipeline(model: str, dtype: torch.dtype):
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    # This process only: loading notes (accelerate, per-component bars) would bury the one progress line.
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    except ImportError:  # pipelines without text encoders from transformers
        pass
    try:
        pipe = DiffusionPipeline.from_pretrained(model, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"cannot load a diffusers pipeline from {model!r} offline: {first}") from None
    if getattr(pipe, "transformer", None) is None:
        raise UsageError(f"{type(pipe).__name__} from {model!r} has no transformer; DyPE rescales a diffusion transformer's RoPE")
    return pipe


def _patch_kwargs(args, dynamic: bool) -> dict[str, Any]:
    kw = dict(
        method=args.method, dynamic=dynamic, lambda_s=args.lambda_s, lambda_t=args.lambda_t, aspect=args.aspect,
        yarn_modulation=args.yarn_modulation, backend=args.backend,
    )
    if args.base_grid is not None:
        kw["base_grid"] = args.base_grid
    if args.base_resolution is not None:
        kw["base_resolution"] = args.base_resolution
    return kw


def render(pipe, args, variant: str):
    """One image: variant "stock" (no DyPE), "static" or "dynamic"."""
    from dype_rope import enable

    call = dict(
        prompt=args.prompt, height=args.height, width=args.width, num_inference_steps=args.steps,
        generator=torch.Generator("cpu").manual_seed(args.seed), output_type="pil",
    )
    if args.guidance_scale is not None:
        call["guidance_scale"] = args.guidance_scale
    name = _NAMES[args.method]
    label = {"stock": "no DyPE", "static": name, "dynamic": name if args.method == "none" else f"Dy-{name}"}[variant]
    # The pipeline's own tqdm bar, named after the variant (on stderr, like every tqdm bar).
    pipe.set_progress_bar_config(desc=f"{label:>14}", leave=True)
    handle = None
    if variant != "stock":
        try:
            handle = enable(pipe, args.height, args.width, shift=args.shift, **_patch_kwargs(args, variant == "dynamic"))
        except (TypeError, ValueError) as err:
            raise UsageError(str(err)) from None
        print(f"{label:>14}: scheduler shift mu = {handle.mu:.4g} ({args.shift}), {handle.image_seq_len} image tokens")
    try:
        image = pipe(**call).images[0]
    finally:
        if handle is not None:
            handle.remove()
    return label, image


def settings(args, variant: str, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    from dype_rope.config import DyPEConfig

    cfg = DyPEConfig(args.method, variant == "dynamic", args.lambda_s, args.lambda_t, args.yarn_modulation)
    out = dict(
        dype_rope=__version__, model=args.model, prompt=args.prompt, height=args.height, width=args.width,
        steps=args.steps, seed=args.seed, guidance_scale=args.guidance_scale, device=str(device), dtype=str(dtype),
        variant=variant,
    )
    if variant != "stock":
        out.update(
            method=cfg.method, dynamic=cfg.dynamic, lambda_s=cfg.lambda_s, lambda_t=cfg.lambda_t,
            yarn_modulation=cfg.yarn_modulation, aspect=args.aspect, shift=args.shift, base_grid=args.base_grid,
            base_resolution=args.base_resolution, backend=args.backend,
        )
    return out


def save_png(image, path: Path, meta: dict[str, Any]) -> Path:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("dype_rope", json.dumps(meta, sort_keys=True))
    info.add_text("Software", f"dype_rope {__version__}")
    return write_atomically(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def side_by_side(labelled: list[tuple[str, Any]]):
    """The images in a row, each under a label bar."""
    from PIL import Image, ImageDraw

    bar = 24
    w = sum(im.width for _, im in labelled)
    h = max(im.height for _, im in labelled) + bar
    grid = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(grid)
    x = 0
    for label, im in labelled:
        grid.paste(im.convert("RGB"), (x, bar))
        draw.text((x + 6, 6), label, fill="black")
        x += im.width
    return grid


def check_model(model: str) -> None:
    """A folder on disk, or a model id already in the local Hugging Face cache: anything else is refused here,
    before loading anything."""
    if Path(model).expanduser().is_dir():
        return
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise UsageError(f"no such model folder: {model!r}") from None
    if not isinstance(try_to_load_from_cache(model, "model_index.json"), str):
        raise UsageError(
            f"no such model folder: {model!r}, nor a pipeline of that id in the local Hugging Face cache "
            "(generate never downloads)"
        )


def check_backend(backend: str, device: torch.device) -> None:
    if backend != "triton":
        return
    if device.type != "cuda":
        raise UsageError(f"--backend triton runs the fused kernels on CUDA, but the device is {device.type}; "
                         "use --backend torch or auto")
    from dype_rope.kernels import triton_available

    if not triton_available():
        raise UsageError("--backend triton needs triton: pip install 'dype-rope[triton]'")


def token_side(pipe) -> int:
    """The pixels of one image token per side for this pipeline (VAE factor x patch)."""
    from dype_rope.pipelines import image_tokens

    return next(p for p in range(1, 1 << 14) if image_tokens(pipe, p, p) > 0)


def run_generate(args) -> int:
    # Every check that needs no model comes first: a bad argument costs nothing.
    device = resolve_device(args.device)
    check_backend(args.backend, device)
    out = check_writable(args.output, (".png",), "--output")  # the settings go into the PNG's metadata
    if args.compare:
        check_writable(out.with_name(f"{out.stem}_compare.png"), (".png",), "--output")
    check_model(args.model)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)

    pipe = load_pipeline(args.model, dtype).to(device)
    side = token_side(pipe)
    if args.height < side or args.width < side:
        raise UsageError(
            f"--height {args.height} --width {args.width} is 0 image tokens: one token of this pipeline covers "
            f"{side}x{side} px, so each side needs at least {side} px"
        )
    main_variant = "static" if args.static else "dynamic"
    variants = ["stock", "static", "dynamic"] if args.compare else [main_variant]
    images = {variant: render(pipe, args, variant) for variant in variants}
    label, image = images[main_variant]
    save_png(image, out, settings(args, main_variant, device, dtype))
    print(f"wrote {out} ({label}, {args.width}x{args.height}, seed {args.seed})")
    if args.compare:
        grid_path = out.with_name(f"{out.stem}_compare.png")
        meta = {v: settings(args, v, device, dtype) for v in ("stock", "static", "dynamic")}
        save_png(side_by_side([images[v] for v in ("stock", "static", "dynamic")]), grid_path, meta)
        print(f"wrote {grid_path} (no DyPE | static | Dy-, same seed)")
    sys.stdout.flush()
    return 0
