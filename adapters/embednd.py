"""Generic adapter: BFL / ComfyUI-style `EmbedND` position encodings, and any module passed as
`dype_rope.patch(model, module=...)`.

Such a module has attributes `theta` and `axes_dim` and maps ids [..., L, n_axes] to rotation matrices
[..., L, D/2, 2, 2] = [[cos, -sin], [sin, cos]] per pair (BFL's flux/modules/layers.py, which also inserts a
head axis: [B, 1, L, D/2, 2, 2]). At install the module is called once on a few probe positions: its output
must equal plain RoPE rotation matrices, and where it inserts singleton axes is read off its shape, so the
replacement returns exactly the layout the model's attention expects. Anything else is refused with an
error instead of being patched wrongly.

The diffusion time is read from the model's forward argument named, in this order of preference,
`timestep`, `timesteps`, `t`, `sigma` or `sigmas`, as a value in [0, 1] with 1 = noise (FLUX's sigma).
Models whose time runs otherwise subclass the adapter and set `time_arguments`, `time_divide_by` or
`time_reversed` (docs/adapters.md shows how). Axes 1 and 2 (rows, columns) are rescaled; the scale comes
from the image's own ids where the forward takes them (`img_ids`, `x_ids`: one plan for every embedding of
the call, text included), else from the ids embedded; either way from the tokens on the first index of
axis 0 (conditioning images on later indices keep their positions), as max - min + 1 per axis.

The original module keeps computing its own tables: every pair whose axis is not stretched in a call keeps
the original's number, so at or below the base grid the model is bit for bit what it was, in whatever
precision the module computes (BFL's in the ids' dtype, ComfyUI's in float64).
"""

from __future__ import annotations

import inspect
from itertools import chain
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from dype_rope.rope import RopePlan, check_axes_dims, plain_plan
from dype_rope.rope_formats import rotation_matrices
from dype_rope.timestep import diffusion_times

from .base import Adapter, image_spans, register_adapter

TIME_ARGUMENTS = ("timestep", "timesteps", "t", "sigma", "sigmas")
IMAGE_IDS_ARGUMENTS = ("img_ids", "x_ids")  # BFL FLUX.1 and FLUX.2: the generated image's own ids


def embednd_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Submodules named like BFL's EmbedND that carry `theta` and `axes_dim`."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if type(m).__name__ == "EmbedND" and hasattr(m, "theta") and hasattr(m, "axes_dim")
    ]


def inserted_axes(out_shape: Sequence[int], table_shape: Sequence[int]) -> list[int] | None:
    """Indices of the singleton axes `out_shape` has on top of `table_shape` (None if it is not that)."""
    inserted, j = [], 0
    for i, size in enumerate(out_shape):
        if j < len(table_shape) and size == table_shape[j]:
            j += 1
        elif size == 1:
            inserted.append(i)
        else:
            return None
    return inserted if j == len(table_shape) else None


class DyPEEmbedND(nn.Module):
    """Drop-in for an EmbedND-style module: forward(ids) -> rotation matrices in the original's layout.

    The original module is called too, and every pair whose axis is not stretched in this call keeps the
    original's number: at or below the base grid the output is the module's own, bit for bit, whatever
    precision it computes in (BFL's code uses the dtype of the ids, ComfyUI float64). The choice is made per
    pair on the device (torch.where), so it costs no host sync.
    """

    def __init__(
        self,
        original: nn.Module,
        axes: Sequence[int],
        plan_of_call: Callable[[Tensor], tuple[RopePlan, Tensor]],
    ) -> None:
        super().__init__()
        for attr in ("dim", "theta", "axes_dim"):
            if hasattr(original, attr):
                setattr(self, attr, getattr(original, attr))
        # a plain attribute, not a submodule: the module tree (and so state_dict, LoRA keys) stays as it was
        object.__setattr__(self, "original", original)
        self._axes = tuple(axes)
        self._plan_of_call = plan_of_call

    def forward(self, ids: Tensor) -> Tensor:
        stock = self.original(ids)
        plan, scales = self._plan_of_call(ids)
        out = rotation_matrices(ids, plan)
        for axis in self._axes:
            out = out.unsqueeze(axis)
        stretched = (scales.index_select(-1, plan.pair_axis) > 1).view(-1, 1, 1)  # [D/2, 1, 1]
        return torch.where(stretched, out.to(stock.dtype), stock)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, axes_dim={list(self.axes_dim)}"


def _module_device(module: nn.Module) -> torch.device:
    tensor = next(chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@register_adapter(detect=True, module_classes=(nn.Module,))
class EmbedNDAdapter(Adapter):
    name = "embednd"
    pixels_per_token = 16
    rescaled_axes = (1, 2)
    time_arguments: tuple[str, ...] = TIME_ARGUMENTS
    image_ids_arguments: tuple[str, ...] = IMAGE_IDS_ARGUMENTS
    time_divide_by = 1.0
    time_reversed = False

    @classmethod
    def detects(cls, model: nn.Module) -> bool:
        return len(embednd_modules(model)) == 1

    def default_base_grid(self) -> tuple[int, int]:
        return (64, 64)  # 1024 px at 16 px per token, FLUX's training size; pass base_grid for other models

    def _target(self) -> tuple[nn.Module, str, nn.Module]:
        """(parent, attribute name, module) of the encoding to replace."""
        if self.module is not None:
            for name, m in self.model.named_modules():
                if m is self.module and name:
                    parent_name, _, attr = name.rpartition(".")
                    return self.model.get_submodule(parent_name), attr, m
            raise ValueError(f"module= must be a submodule of the model; this {type(self.module).__name__} is not")
        found = embednd_modules(self.model)
        if len(found) != 1:
            raise TypeError(
                f"{type(self.model).__name__} has {len(found)} EmbedND modules; point at one with patch(model, module=...)"
            )
        name, m = found[0]
        parent_name, _, attr = name.rpartition(".")
        return self.model.get_submodule(parent_name), attr, m

    def _time_argument(self) -> str:
        params = inspect.signature(self.model.forward).parameters
        for name in self.time_arguments:
            if name in params:
                return name
        raise TypeError(
            f"{type(self.model).__name__}.forward has none of the timestep arguments {list(self.time_arguments)}; "
            "subclass dype_rope.adapters.embednd.EmbedNDAdapter with time_arguments = ('your_name',)"
        )

    def _image_ids_argument(self) -> str | None:
        params = inspect.signature(self.model.forward).parameters
        return next((name for name in self.image_ids_arguments if name in params), None)

    def _probe(self, module: nn.Module, axes_dims: Sequence[int], theta: float) -> list[int]:
        """Call the stock module on a few positions; check it returns plain RoPE rotation matrices and learn the
        singleton axes it adds around them."""
        device = _module_device(module)
        n = len(axes_dims)
        ids = torch.stack([torch.arange(3, dtype=torch.float32, device=device) * (a + 1) for a in range(n)], dim=-1)
        ids = torch.stack([ids, ids.flip(0)])  # [2, 3, n]: a batch of two, three tokens
        try:
            with torch.no_grad():
                out = module(ids)
        except Exception as err:
            raise TypeError(
                f"{type(module).__name__} cannot be called as an EmbedND (ids [B, L, {n}] -> rotation matrices): "
                f"{err}; register an adapter for it with @dype_rope.register_adapter(module_classes=[...]) "
                "(see docs/adapters.md)"
            ) from err
        expected = rotation_matrices(ids, plain_plan(axes_dims, theta, device=device))
        axes = inserted_axes(tuple(out.shape), tuple(expected.shape)) if isinstance(out, Tensor) else None
        if axes is None or not torch.allclose(out.float().reshape(expected.shape), expected, atol=1e-5, rtol=1e-5):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise TypeError(
                f"{type(module).__name__} does not return rotation matrices [..., L, D/2, 2, 2] of RoPE with "
                f"theta={theta} and axes_dim={list(axes_dims)} (got {shape}); register an adapter for it with "
                "@dype_rope.register_adapter(module_classes=[...]) (see docs/adapters.md)"
            )
        return axes

    def install(self) -> None:
        parent, attr, original = self._target()
        if isinstance(original, DyPEEmbedND):
            raise RuntimeError(f"{attr} is already a DyPE embedding (a copy of a patched model?)")
        if not (hasattr(original, "theta") and hasattr(original, "axes_dim")):
            raise TypeError(
                f"{type(original).__name__} has no `theta` and `axes_dim`; the generic adapter needs both "
                "(or register an adapter for it: docs/adapters.md)"
            )
        axes_dims = check_axes_dims(original.axes_dim)
        if len(axes_dims) < 3:
            raise ValueError(
                f"the EmbedND adapter rescales axes 1 and 2, but {type(original).__name__} has {len(axes_dims)} axes"
            )
        theta = float(original.theta)
        time_name = self._time_argument()
        axes = self._probe(original, axes_dims, theta)
        base_lens = self.axis_base_lens(len(axes_dims))

        ids_name = self._image_ids_argument()

        def plan_of_call(ids: Tensor) -> tuple[RopePlan, Tensor]:
            step = self.step  # the calling thread's
            if step.timestep is None:
                raise self.outside_forward()
            if step.plan is not None:  # one plan per model call, however often it embeds (FLUX.2: image, text)
                return step.plan, step.scales
            # The image's own ids when the forward takes them (BFL: img_ids / x_ids), else the ids embedded;
            # extents are token counts, so grids that start at 0 (FLUX) and centred ones read alike.
            image_ids = step.ids if step.ids is not None else ids
            spans = image_spans(image_ids if image_ids.dim() <= 3 else image_ids.flatten(0, -3))
            # one plan per sample: the matrices carry the ids' batch dimension, so a batch may mix times
            t = diffusion_times(
                step.timestep,
                divide_by=self.time_divide_by,
                reverse=self.time_reversed,
                dtype=spans.dtype,
                device=spans.device,
            )
            plan = self.plan_step(t, spans, axes_dims, theta, base_lens)
            if step.ids is None:  # ids of another kind may follow in this call: plan each embedding alone
                step.plan = None
            return plan, step.scales

        setattr(parent, attr, DyPEEmbedND(original, axes, plan_of_call))
        self.on_remove(lambda: setattr(parent, attr, original))
        self.hook_calls(self.capture(time_name, ids_name))
