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
from dype_rope.schedules import takes_global_scale
from dype_rope.timestep import host_readable

from ..base import Adapter, CallHook, qualified_name, register_adapter, spans_on
from .call import CallState, ComfyCall
from .embed import DyPEComfyEmbed
from .families import FAMILIES, TIMES, ComfyFamily
from .formats import LAYOUTS
from .components import READERS as COMPONENT_READERS
from .components import DyPEComponentsEmbed
from . import cogvideox, ltx
from .grid import READERS, DyPEGridEmbed

# a method row's reader ((axis channels, theta) from the model) and, where it is not JoyImage's component method,
# the factory of its replacement: (original method, adapter, call state, name) -> a callable
METHOD_READERS = {**COMPONENT_READERS, **ltx.READERS, **cogvideox.READERS}
METHOD_REPLACEMENTS = {**ltx.REPLACEMENTS, **cogvideox.REPLACEMENTS}
METHOD_KINDS = (DyPEComponentsEmbed, ltx.DyPELtxEmbed, cogvideox.DyPECogVideoXEmbed)


def patch_size_hw(diffusion_model: nn.Module, attr: "str | ComfyFamily" = "patch_size") -> tuple[int, int]:
    """The model's patch size on (rows, cols): an int, or a (frames, rows, cols) / (rows, cols) sequence; given a
    family row, the row's fixed patch where it has one, else the attribute the row names."""
    if isinstance(attr, ComfyFamily):
        if attr.patch is not None:
            return attr.patch, attr.patch
        attr = attr.patch_attr
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
        self.patch_hw = patch_size_hw(model, self.family)
        self.stock = {path: self._embedder(path, (stock or {}).get(path)) for path in self.family.embedders}
        first = self.stock[self.family.embedders[0]]
        if self.family.grid is not None:
            axes_dims, self.theta = READERS[self.family.grid](first)
            self.axes_dims = check_axes_dims(axes_dims)
        elif self.family.method is not None:
            axes_dims, self.theta = METHOD_READERS[self.family.method](model)
            self.axes_dims = check_axes_dims(axes_dims)
        else:
            self.axes_dims = check_axes_dims(first.axes_dim)
            self.theta = float(first.theta)
        n = len(self.axes_dims)
        if max(self.family.id_axes) >= n:
            raise ValueError(f"{type(model).__name__}'s embedder has {n} axes; the {self.name} adapter expects more")
        # the base grid's extent in id units: the positions the model was trained on, after its own id scale
        ph, pw = self.patch_hw
        self.base_extent = self._own_extents(*self.base_grid, self.base_grid[0] * ph, self.base_grid[1] * pw)
        grid = dict(zip(self.family.id_axes, self.base_extent))
        self.base_lens = tuple(float(grid.get(a, 1.0)) for a in range(n))

    def _own_extents(self, rows: int, cols: int, h: int, w: int) -> list[float]:
        """Extent of a rows x cols token grid (an h x w latent) in id units without rope_options: (n - 1) / scale
        + 1 where the family divides its ids by a scale of its own (Kandinsky 5), n elsewhere."""
        if self.family.id_scale is None:
            return [rows, cols]
        scale = self.family.id_scale(self.model, h, w)
        return [(n - 1) / scale[a] + 1.0 for n, a in zip((rows, cols), self.family.id_axes)]

    def default_base_grid(self) -> tuple[int, int]:
        return self.family.base_grid

    # -- the call --------------------------------------------------------------------------------------------
    def start_call(self, x: Tensor, sigma: Any, transformer_options: dict | None, latent_shapes=None) -> ComfyCall:
        """The call of a latent x [B, C, (T,) H, W] at `sigma` (a tensor [B] or a number, 1 = noise; for a
        "timestep" row the model's own timestep)."""
        if isinstance(x, (list, tuple)):  # LTX-2's diffusion model takes [video, audio]: the video sets the grid
            x = x[0]
        shape = tuple(latent_shapes[0]) if latent_shapes else tuple(x.shape)
        rows, cols = (math.ceil(s / p) for s, p in zip(shape[-2:], self.patch_hw))
        extents = self._own_extents(rows, cols, *shape[-2:])
        stretch = (transformer_options or {}).get("rope_options") if self.family.rope_options else None
        if stretch:
            extents = [image_extent(rows, stretch.get("scale_y")), image_extent(cols, stretch.get("scale_x"))]
        ratios = [e / b for e, b in zip(extents, self.base_extent)]
        if self.aspect == "isotropic":
            ratios = [max(ratios)] * len(ratios)
        scales = [1.0] * len(self.axes_dims)
        for axis, r in zip(self.family.id_axes, ratios):
            scales[axis] = r
        axes = tuple(a for a in self.family.id_axes if scales[a] > 1.0)
        if axes and takes_global_scale(self.cfg.method):  # the image's ratio reaches its every axis (vision_yarn)
            axes = tuple(self.family.id_axes)
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
            # free to read (a CPU tensor outside torch.compile); on a GPU build_plan turns it into NaN instead.
            # Checked as DyPE's time, after the family's conversion (Cosmos' rectified flow: sigma / (sigma + 1))
            for value, t in zip(sigma.tolist(), TIMES[self.family.time](sigma.double()).tolist()):
                if not 0.0 <= t <= 1.0:
                    raise ValueError(
                        f"{type(self.model).__name__} was called at sigma {value}, DyPE's time {t}; DyPE reads the "
                        f"sampler's sigma as a diffusion time in [0, 1] (1 = noise) through the {self.family.time!r} "
                        "conversion"
                    )
        return ComfyCall(sigma=sigma, scales=tuple(scales), axes=axes)

    def build_plan(self, call: ComfyCall, device: torch.device) -> RopePlan:
        dtype = freq_dtype(device)
        t = TIMES[self.family.time](call.sigma.to(device=device, dtype=dtype).reshape(-1))  # one plan per sample
        # a time outside [0, 1] (or NaN) has no DyPE plan: its sample's rescaled pairs become NaN, decided on the
        # device (reading the value would stall the stream every step), so the output is loudly NaN instead of
        # planned for a mirrored time (-0.5 would plan as +0.5)
        t = torch.where((t >= 0) & (t <= 1), t, torch.full_like(t, math.nan))
        scales = spans_on(call.scales, dtype, device).expand(t.shape[0], -1)
        return build_plan(self.axes_dims, self.theta, scales, t, self.cfg, self.base_lens, self.family.id_axes)

    # -- the replaced modules --------------------------------------------------------------------------------
    def _embedder(self, path: str, module: nn.Module | None) -> nn.Module:
        if module is None:
            try:
                module = self.model.get_submodule(path)
            except AttributeError:
                module = None
        if isinstance(module, DyPEComfyEmbed):
            raise RuntimeError(f"{type(self.model).__name__}.{path} is already a DyPE embedding")
        if isinstance(module, (DyPEGridEmbed, *METHOD_KINDS)):
            raise RuntimeError(f"{type(self.model).__name__}.{path} is already a DyPE embedding")
        if self.family.method is not None:
            module = module if module is not None else getattr(self.model, path, None)
            if not callable(module):
                raise TypeError(f"{type(self.model).__name__}.{path} is not the method the {self.name} adapter wraps")
            return module
        if self.family.grid is not None and module is not None:
            return module  # the grid reader checks it
        if module is None or not (hasattr(module, "theta") and hasattr(module, "axes_dim")):
            raise TypeError(
                f"{type(self.model).__name__}.{path} is {type(module).__name__}, not the EmbedND-style embedder "
                f"(theta, axes_dim) the {self.name} adapter replaces"
            )
        return module

    def embedders(self) -> dict[str, nn.Module]:
        """Attribute path -> the replacement of the embedder there."""
        what = f"{type(self.model).__name__}"
        if self.family.grid is not None:
            return {path: DyPEGridEmbed(original, self.state, self.build_plan, f"{what}.{path}")
                    for path, original in self.stock.items()}
        if self.family.method in METHOD_REPLACEMENTS:
            make = METHOD_REPLACEMENTS[self.family.method]
            return {path: make(original, self, self.state, f"{what}.{path}") for path, original in self.stock.items()}
        if self.family.method is not None:
            return {path: DyPEComponentsEmbed(original, self.state, self.build_plan, f"{what}.{path}")
                    for path, original in self.stock.items()}
        return {
            path: DyPEComfyEmbed(original, self.state, self.build_plan, f"{what}.{path}", LAYOUTS[self.family.layout])
            for path, original in self.stock.items()
        }

    # -- dype_rope.patch(diffusion_model) -------------------------------------------------------------------
    def install(self) -> None:
        for path, replacement in self.embedders().items():
            parent_name, _, attr = path.rpartition(".")
            parent = self.model.get_submodule(parent_name)
            original = replacement.original
            # a method row's replacement shadows the class's method as an instance attribute: removing it is
            # deleting that attribute; a module (or any attribute of the instance) is put back
            shadows = self.family.method is not None and attr not in vars(parent)
            setattr(parent, attr, replacement)
            if shadows:
                self.on_remove(lambda parent=parent, attr=attr: vars(parent).pop(attr, None))
            else:
                self.on_remove(lambda parent=parent, attr=attr, original=original: setattr(parent, attr, original))
        state = self.state

        def pre(module, args, kwargs):
            x = args[0] if args else kwargs.get("x")
            options = kwargs.get("transformer_options") or {}
            sigma = options.get("sigmas")
            if self.family.time == "timestep":  # the diffusion model's own timestep argument (CogVideoX)
                sigma = args[1] if len(args) > 1 else kwargs.get("timestep")
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
        time = t
        if self.family.time == "timestep":
            # the timestep the diffusion model is about to get (BaseModel._apply_model), on the device, no sync
            time = executor.class_obj.model_sampling.timestep(t).float()
        call = self.start_call(x, time, options, kwargs.get("latent_shapes"))
        return self.state.run(call, executor, x, t, *args, **kwargs)


def _adapter_for(family: ComfyFamily) -> type[ComfyAdapter]:
    base = OWN_ADAPTERS.get(family.name, ComfyAdapter)
    cls = type(f"Comfy{family.name.title().replace('_', '')}Adapter", (base,), {})
    cls.family = family
    cls.name = f"comfyui-{family.name}"
    cls.rescaled_axes = family.id_axes
    cls.pixels_per_token = family.pixels_per_token
    cls.__doc__ = f"ComfyUI {family.note or family.name}."
    return cls


# rows whose replacement is not an embedder: their own ComfyAdapter subclass (imported here: it subclasses ComfyAdapter)
from .ideogram4 import Ideogram4Adapter  # noqa: E402

OWN_ADAPTERS: dict[str, type[ComfyAdapter]] = {"ideogram4": Ideogram4Adapter}

ADAPTERS: dict[str, type[ComfyAdapter]] = {family.name: _adapter_for(family) for family in FAMILIES}


def rows_of(cls: type) -> list[ComfyFamily]:
    """The family rows of a diffusion-model class (several where rows share it): those of the first class along
    its MRO that has rows, so a subclass with a row of its own (Anima) is never matched as its base class."""
    for c in cls.__mro__:
        rows = [family for family in FAMILIES if qualified_name(c) in family.classes]
        if rows:
            return rows
    return []


def _embedder_axes(diffusion_model: nn.Module, family: ComfyFamily) -> int | None:
    try:
        return len(diffusion_model.get_submodule(family.embedders[0]).axes_dim)
    except (AttributeError, TypeError):
        return None


def comfy_adapter_class(diffusion_model: nn.Module) -> type[ComfyAdapter]:
    """The adapter for a ComfyUI diffusion model, or a TypeError naming the families there are (or, for a class
    dype_rope refuses, why)."""
    from .refused import refusal_message, refusal_of

    rows = rows_of(type(diffusion_model))
    for family in rows:
        if family.n_axes is not None and _embedder_axes(diffusion_model, family) != family.n_axes:
            continue
        if family.when is not None and getattr(diffusion_model, family.when[0], None) != family.when[1]:
            continue
        why = family.refusal(diffusion_model) if family.refusal is not None else None
        if why:
            raise TypeError(f"DyPE refuses {qualified_name(type(diffusion_model))}: {why}")
        return ADAPTERS[family.name]
    if rows:
        axes = _embedder_axes(diffusion_model, rows[0])
        layouts = "; ".join(f"{f.name}: {f.n_axes or 'any'} id axes, {f.when or 'any model'}" for f in rows)
        raise TypeError(
            f"{qualified_name(type(diffusion_model))} (its embedder {rows[0].embedders[0]} has {axes} id axes) fits "
            f"none of the DyPE rows for this class ({layouts})"
        )
    if refusal_of(type(diffusion_model)) is not None:
        raise TypeError(refusal_message(type(diffusion_model)))
    known = ", ".join(sorted({c for f in FAMILIES for c in f.classes}))
    raise TypeError(f"DyPE has no ComfyUI adapter for {qualified_name(type(diffusion_model))}; supported: {known}")


class _SharedClass(ComfyAdapter):
    """The registered adapter of a class several rows share: constructing it builds the adapter of the row that
    fits the model (a row adapter is no subclass of this one, so Python does not initialise it twice)."""

    def __new__(cls, model: nn.Module, *args, **kwargs):
        return comfy_adapter_class(model)(model, *args, **kwargs)


def _register() -> None:
    by_class: dict[str, list[ComfyFamily]] = {}
    for family in FAMILIES:
        for name in family.classes:
            by_class.setdefault(name, []).append(family)
    for name, rows in by_class.items():
        if len(rows) == 1:
            register_adapter(name)(ADAPTERS[rows[0].name])
            continue
        first = ADAPTERS[rows[0].name]
        shared = type(f"ComfyShared{name.rpartition('.')[2]}Adapter", (_SharedClass,), {
            "family": rows[0], "name": "comfyui-" + "|".join(f.name for f in rows),
            # patch(base_resolution=...) converts pixels before the row is known: the first row's pixels per token
            "rescaled_axes": first.rescaled_axes, "pixels_per_token": first.pixels_per_token,
            "__doc__": "ComfyUI " + "; ".join(f.note or f.name for f in rows) + ".",
        })
        register_adapter(name)(shared)


_register()
