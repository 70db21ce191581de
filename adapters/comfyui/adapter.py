"""DyPE for ComfyUI's diffusion models (`comfy.ldm.*`), two ways in, one mechanism.

- `dype_rope.patch(diffusion_model)`: the embedders are replaced in place and a forward pre-hook on the
  diffusion model starts each call (undone by `handle.remove()`).
- The DyPE node (`dype_rope_comfy.patch_model_patcher`): the embedders are ComfyUI object patches on a clone of
  the ModelPatcher and an `apply_model` wrapper starts each call, so ComfyUI itself puts the model back when
  it loads another patcher, and the input model never changes.

Either way a call starts from the latent's shape (host numbers: the image's token grid, never its ids, which
reference images and caption tokens share) and the sampler's sigma tensor (the flow-matching time, 1 =
noise, on the device as it is). What the model then embeds follows DyPE for that call.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from dype_rope.config import DyPEConfig
from dype_rope.rope import RopePlan, build_plan, check_axes_dims, freq_dtype
from dype_rope.timestep import host_readable

from ..base import Adapter, CallHook, qualified_name, register_adapter, spans_on
from .call import CallState, ComfyCall
from .embed import DyPEComfyEmbed
from .families import FAMILIES, ComfyFamily


def patch_size_hw(diffusion_model: nn.Module, attr: str = "patch_size") -> tuple[int, int]:
    """The model's patch size on (rows, cols): an int, or a (frames, rows, cols) / (rows, cols) sequence."""
    ps = getattr(diffusion_model, attr, None)
    if isinstance(ps, int):
        return ps, ps
    if isinstance(ps, (tuple, list)) and len(ps) >= 2:
        return int(ps[-2]), int(ps[-1])
    raise TypeError(f"{type(diffusion_model).__name__}.{attr} is not a patch size ({ps!r})")


def image_extent(tokens: int, stretch: Any) -> float:
    """Extent of `tokens` ids after ComfyUI's rope_options stretch: (n - 1) * scale + 1 (shifts move ids only)."""
    scale = 1.0 if stretch is None else float(stretch)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"rope_options scale must be a positive finite number, got {stretch!r}")
    return (tokens - 1) * scale + 1.0


class ComfyAdapter(Adapter):
    """One ComfyUI family (a row of `families.FAMILIES`); subclassed per row below."""

    family: ComfyFamily
    fused_attention = False

    def __init__(
        self,
        model: nn.Module,
        cfg: DyPEConfig,
        base_grid,
        aspect="per-axis",
        backend="torch",
        module=None,
        *,
        stock: dict[str, nn.Module] | None = None,
    ):
        """stock: attribute path -> the stock embedder there, where the live model may carry someone else's
        object patch right now (the node path); by default the model's own submodules."""
        if module is not None:
            raise ValueError(f"the {self.name} adapter finds its embedders itself; drop module=")
        super().__init__(model, cfg, base_grid, aspect, backend, module)
        self.state = CallState()
        self.patch_hw = patch_size_hw(model, self.family.patch_attr)
        self.stock = {path: self._embedder(path, (stock or {}).get(path)) for path in self.family.embedders}
        first = self.stock[self.family.embedders[0]]
        self.axes_dims = check_axes_dims(first.axes_dim)
        self.theta = float(first.theta)
        n = len(self.axes_dims)
        if max(self.family.id_axes) >= n:
            raise ValueError(f"{type(model).__name__}'s embedder has {n} axes; the {self.name} adapter expects more")
        grid = dict(zip(self.family.id_axes, self.base_grid))
        self.base_lens = tuple(float(grid.get(a, 1.0)) for a in range(n))

    def default_base_grid(self) -> tuple[int, int]:
        return self.family.base_grid

    # -- the call --------------------------------------------------------------------------------------------
    def start_call(self, x: Tensor, sigma: Any, transformer_options: dict | None, latent_shapes=None) -> ComfyCall:
        """The call of a latent x [B, C, (T,) H, W] at `sigma` (a tensor [B] or a number, 1 = noise)."""
        shape = tuple(latent_shapes[0]) if latent_shapes else tuple(x.shape)
        rows, cols = (math.ceil(s / p) for s, p in zip(shape[-2:], self.patch_hw))
        extents = [rows, cols]
        stretch = (transformer_options or {}).get("rope_options") if self.family.rope_options else None
        if stretch:
            extents = [image_extent(rows, stretch.get("scale_y")), image_extent(cols, stretch.get("scale_x"))]
        ratios = [e / b for e, b in zip(extents, self.base_grid)]
        if self.aspect == "isotropic":
            ratios = [max(ratios)] * len(ratios)
        scales = [1.0] * len(self.axes_dims)
        for axis, r in zip(self.family.id_axes, ratios):
            scales[axis] = r
        axes = tuple(a for a in self.family.id_axes if scales[a] > 1.0)
        if sigma is None:
            raise ValueError(
                f"{type(self.model).__name__} was called without transformer_options['sigmas']; DyPE needs the "
                "diffusion time of every call: sample through ComfyUI, or pass transformer_options={'sigmas': sigma}"
            )
        if not isinstance(sigma, Tensor):
            sigma = torch.tensor(float(sigma))
        sigma = sigma.reshape(-1)
        if sigma.shape[0] != x.shape[0] and x.shape[0] % sigma.shape[0] == 0:
            # transformer_options["sigmas"] holds one sigma per latent; ComfyUI batches cond and uncond chunks
            sigma = sigma.repeat(x.shape[0] // sigma.shape[0])
        if axes and host_readable(sigma):
            # free to read (a CPU tensor outside torch.compile); on a GPU build_plan turns it into NaN instead
            for value in sigma.tolist():
                if not 0.0 <= value <= 1.0:
                    raise ValueError(
                        f"{type(self.model).__name__} was called at sigma {value}; DyPE reads sigma as the "
                        "flow-matching time in [0, 1] (1 = noise)"
                    )
        return ComfyCall(sigma=sigma, scales=tuple(scales), axes=axes)

    def build_plan(self, call: ComfyCall, device: torch.device) -> RopePlan:
        dtype = freq_dtype(device)
        t = call.sigma.to(device=device, dtype=dtype).reshape(-1)  # one plan per sample
        # a sigma outside [0, 1] (or NaN) has no DyPE time: its sample's rescaled pairs become NaN, decided on
        # the device (reading the value would stall the stream every step), so the output is loudly NaN
        # instead of planned for a mirrored time (-0.5 would plan as +0.5)
        t = torch.where((t >= 0) & (t <= 1), t, torch.full_like(t, math.nan))
        scales = spans_on(call.scales, dtype, device).expand(t.shape[0], -1)
        return build_plan(self.axes_dims, self.theta, scales, t, self.cfg, self.base_lens)

    # -- the replaced modules --------------------------------------------------------------------------------
    def _embedder(self, path: str, module: nn.Module | None) -> nn.Module:
        if module is None:
            try:
                module = self.model.get_submodule(path)
            except AttributeError:
                module = None
        if isinstance(module, DyPEComfyEmbed):
            raise RuntimeError(f"{type(self.model).__name__}.{path} is already a DyPE embedding")
        if module is None or not (hasattr(module, "theta") and hasattr(module, "axes_dim")):
            raise TypeError(
                f"{type(self.model).__name__}.{path} is {type(module).__name__}, not the EmbedND-style embedder "
                f"(theta, axes_dim) the {self.name} adapter replaces"
            )
        return module

    def embedders(self) -> dict[str, DyPEComfyEmbed]:
        """Attribute path -> the replacement of the embedder there."""
        what = f"{type(self.model).__name__}"
        return {
            path: DyPEComfyEmbed(original, self.state, self.build_plan, f"{what}.{path}")
            for path, original in self.stock.items()
        }

    # -- dype_rope.patch(diffusion_model) -------------------------------------------------------------------
    def install(self) -> None:
        for path, replacement in self.embedders().items():
            parent_name, _, attr = path.rpartition(".")
            parent = self.model.get_submodule(parent_name)
            original = replacement.original
            setattr(parent, attr, replacement)
            self.on_remove(lambda parent=parent, attr=attr, original=original: setattr(parent, attr, original))
        state = self.state

        def pre(module, args, kwargs):
            x = args[0] if args else kwargs.get("x")
            options = kwargs.get("transformer_options") or {}
            sigma = options.get("sigmas")
            state.call = self.start_call(x, sigma, options, kwargs.get("latent_shapes"))

        def post(module, args, kwargs, output):
            state.call = None

        # CallHook: the model owns the patch through these hooks, and copying or pickling it says what to do
        self.on_remove(self.model.register_forward_pre_hook(CallHook(pre), with_kwargs=True).remove)
        self.on_remove(self.model.register_forward_hook(CallHook(post), with_kwargs=True, always_call=True).remove)

    # -- the ComfyUI node -------------------------------------------------------------------------------------
    def apply_model_wrapper(self, executor, x, t, *args, **kwargs):
        """ComfyUI `apply_model` wrapper: x is the noisy latent, t the sampler's sigma tensor [B]."""
        options = args[3] if len(args) > 3 else kwargs.get("transformer_options")
        call = self.start_call(x, t, options, kwargs.get("latent_shapes"))
        return self.state.run(call, executor, x, t, *args, **kwargs)


def _adapter_for(family: ComfyFamily) -> type[ComfyAdapter]:
    cls = type(f"Comfy{family.name.title().replace('_', '')}Adapter", (ComfyAdapter,), {})
    cls.family = family
    cls.name = f"comfyui-{family.name}"
    cls.rescaled_axes = family.id_axes
    cls.pixels_per_token = family.pixels_per_token
    cls.__doc__ = f"ComfyUI {family.note or family.name}."
    return register_adapter(*family.classes)(cls)


ADAPTERS: dict[str, type[ComfyAdapter]] = {family.name: _adapter_for(family) for family in FAMILIES}


def comfy_adapter_class(diffusion_model: nn.Module) -> type[ComfyAdapter]:
    """The adapter for a ComfyUI diffusion model, or a TypeError naming the families there are."""
    names = {qualified_name(c) for c in type(diffusion_model).__mro__}
    for family in FAMILIES:
        if names & set(family.classes):
            return ADAPTERS[family.name]
    known = ", ".join(sorted(c for f in FAMILIES for c in f.classes))
    raise TypeError(f"DyPE has no ComfyUI adapter for {qualified_name(type(diffusion_model))}; supported: {known}")
