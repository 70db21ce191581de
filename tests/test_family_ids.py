"""What the ids mechanism (adapters/mechanisms/ids.py) does beyond the contract suite: the probe refuses a row that
does not describe its module, mixed-time batches (one plan per sample where the tables carry a batch), the
nunchaku classes matched by name, OmniGen refused, and a model without a row told which row to declare
(docs/families.md, whose worked example runs here as written)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import dype_rope
from families.flux import TINY_FLUX, flux_inputs
from families.ids_flux_like import FLUX3
from families.ids_matrices import NUNCHAKU_V2, PRX, tiny_nunchaku

ROOT = Path(__file__).resolve().parents[1]


def run(model, x):
    with torch.no_grad():
        return model(**x).sample


def batch_of(row, grid, times):
    """One sample repeated len(times) times, each at its own DyPE time t, as the family's pipeline passes them."""
    one = row.inputs(grid, 1.0)
    x = {k: v.repeat(len(times), *[1] * (v.dim() - 1)) if torch.is_tensor(v) and v.dim() > 1 and len(v) == 1 else v
         for k, v in one.items()}
    x[row.time_arg] = row.pipeline_time(1000.0 * torch.tensor(times))
    return x


# -- the probe ---------------------------------------------------------------------------------------------


class OffTheta(nn.Module):
    """Says theta = 10000 but turns 5% faster: a row trusting the attribute would rescale the wrong frequencies."""

    def __init__(self, axes_dim):
        super().__init__()
        from diffusers.models.transformers.transformer_flux import FluxPosEmbed

        self.theta, self.axes_dim = 10000, axes_dim
        self._real = FluxPosEmbed(theta=10500, axes_dim=axes_dim)

    def forward(self, ids):
        return self._real(ids)


def flux_with(encoding):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**TINY_FLUX).eval()
    model.pos_embed = encoding
    return model


def row_for(model, name, **ids):
    from dype_rope.adapters.mechanisms.ids import Ids

    cls = type(name, (type(model),), {"__module__": "tests_ids_probe"})
    model.__class__ = cls
    dype_rope.register_family(
        dype_rope.Family(
            name=name, classes=(f"tests_ids_probe.{name}",), module="pos_embed", mechanism=Ids(**ids),
            base_grid=(4, 5),
        )
    )
    return model


def test_the_probe_refuses_a_module_whose_real_theta_is_not_its_declared_one():
    model = row_for(flux_with(OffTheta(list(TINY_FLUX["axes_dims_rope"]))), "OffThetaFlux")
    with pytest.raises(TypeError, match=r"differ from plain RoPE in that format by"):
        dype_rope.patch(model)
    assert not dype_rope.is_patched(model)


def test_the_probe_refuses_a_row_declaring_the_wrong_format():
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    model = flux_with(FluxPosEmbed(theta=10000, axes_dim=list(TINY_FLUX["axes_dims_rope"])))
    model = row_for(model, "HalfDeclaredFlux", format="cos_sin_half")
    with pytest.raises(TypeError, match="format 'cos_sin_half'"):
        dype_rope.patch(model)
    assert isinstance(model.pos_embed, FluxPosEmbed)


# -- mixed-time batches ------------------------------------------------------------------------------------


def test_mixed_times_with_batched_ids_get_one_plan_per_sample():
    """PRX's tables carry a batch dimension: each sample is rescaled for its own time, as if run alone."""
    model, times = PRX.build(), (0.2, 0.8)
    with dype_rope.patch(model, base_grid=PRX.base):
        batched = run(model, batch_of(PRX, PRX.above, times))
        alone = [run(model, batch_of(PRX, PRX.above, (t,))) for t in times]
    assert not torch.allclose(alone[0], alone[1])
    for i in range(len(times)):
        torch.testing.assert_close(batched[i], alone[i][0], rtol=1e-5, atol=1e-5)


def test_mixed_times_with_shared_ids_are_refused_above_the_base_grid_and_pass_below():
    model = FLUX3.build()
    below = batch_of(FLUX3, FLUX3.base, (0.2, 0.8))
    stock = run(model, below)
    with dype_rope.patch(model, base_grid=FLUX3.base):
        assert torch.equal(run(model, below), stock)
        with pytest.raises(ValueError, match="all samples of a batch must share one diffusion time"):
            run(model, batch_of(FLUX3, FLUX3.above, (0.2, 0.8)))


# -- classes matched by name, refused classes ----------------------------------------------------------------


def test_nunchaku_v2_is_matched_by_its_qualified_name():
    model = tiny_nunchaku(which=NUNCHAKU_V2)
    x = flux_inputs(8, 7, t=0.5)
    ref = run(model, x)
    with dype_rope.patch(model, base_grid=(4, 5)) as handle:
        assert handle.adapter.name == "nunchaku-flux"
        assert not torch.equal(run(model, x), ref)
    assert torch.equal(run(model, x), ref)


def test_omnigen_is_refused_with_the_reason():
    from diffusers import OmniGenTransformer2DModel

    model = OmniGenTransformer2DModel.__new__(OmniGenTransformer2DModel)  # the class decides; no weights needed
    nn.Module.__init__(model)
    with pytest.raises(TypeError, match="one-dimensional over the flattened sequence"):
        dype_rope.patch(model)


# -- models without a row ----------------------------------------------------------------------------------


class Rope(nn.Module):
    """A FLUX-style position encoding under a name no row knows."""

    def __init__(self, theta, axes_dim):
        super().__init__()
        from diffusers.models.transformers.transformer_flux import FluxPosEmbed

        self.theta, self.axes_dim = theta, axes_dim
        self._stock = FluxPosEmbed(theta=theta, axes_dim=axes_dim)

    def forward(self, ids):
        return self._stock(ids)


class MyDiT(nn.Module):
    """The docs' example model: one attention layer over image and text tokens, RoPE at `rope`."""

    def __init__(self, channels=8, heads=2, axes_dim=(4, 6, 6)):
        super().__init__()
        self.heads = heads
        self.rope = Rope(10000, list(axes_dim))
        self.qkv = nn.Linear(channels, 3 * heads * sum(axes_dim))
        self.out = nn.Linear(heads * sum(axes_dim), channels)

    def forward(self, hidden_states, encoder_hidden_states, img_ids, txt_ids, timestep):
        from diffusers.models.embeddings import apply_rotary_emb

        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).unbind(2)
        tables = self.rope(torch.cat([txt_ids, img_ids]))
        q, k = (apply_rotary_emb(y, tables, sequence_dim=1) for y in (q, k))
        attn = nn.functional.scaled_dot_product_attention(*(y.transpose(1, 2) for y in (q, k, v)))
        return types.SimpleNamespace(sample=self.out(attn.transpose(1, 2).flatten(2))[:, -hidden_states.shape[1]:])


@pytest.fixture(scope="module")
def my_dit_class():
    """MyDiT under the qualified name the docs use, my_package.model.MyDiT."""
    package, module = types.ModuleType("my_package"), types.ModuleType("my_package.model")
    cls = type("MyDiT", (MyDiT,), {"__module__": "my_package.model"})
    module.MyDiT, package.model = cls, module
    sys.modules.update({"my_package": package, "my_package.model": module})
    yield cls
    for name in ("my_package.model", "my_package"):
        sys.modules.pop(name, None)


def my_inputs(grid, t):
    g = torch.Generator().manual_seed(3)
    from families.tiny import grid_ids

    ids = grid_ids(*grid).float()
    return dict(
        hidden_states=torch.randn(1, len(ids), 8, generator=g),
        encoder_hidden_states=torch.randn(1, 3, 8, generator=g),
        img_ids=ids,
        txt_ids=torch.zeros(3, 3),
        timestep=torch.tensor([t]),
    )


def worked_example() -> str:
    text = (ROOT / "docs" / "families.md").read_text()
    section = text.split("## Worked example", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_a_model_without_a_row_is_told_the_module_and_the_row_then_the_documented_row_patches_it(my_dit_class):
    torch.manual_seed(0)
    model = my_dit_class().eval()
    with pytest.raises(TypeError) as err:
        dype_rope.patch(model)
    message = str(err.value)
    assert "no row of the family table lists my_package.model.MyDiT" in message
    assert "rope: Rope(theta=10000, axes_dim=[4, 6, 6]), format 'cos_sin_interleaved'" in message
    assert "dype_rope.register_family(dype_rope.Family(" in message and "module='rope'" in message
    assert "image_ids='img_ids'" in message and "Time('timestep'" in message
    assert not dype_rope.is_patched(model)

    small, big = my_inputs((4, 4), 0.7), my_inputs((96, 80), 0.7)
    with torch.no_grad():
        ref_small, ref_big = model(**small).sample, model(**big).sample
    namespace = {"model": model}
    exec(worked_example(), namespace)  # the docs' code as written: registers the row and patches
    handle = namespace["handle"]
    assert handle.adapter.name == "my-dit" and handle.base_grid == (64, 64)
    with torch.no_grad():
        assert torch.equal(model(**small).sample, ref_small)
        assert not torch.allclose(model(**big).sample, ref_big)
    handle.remove()
    with torch.no_grad():
        assert torch.equal(model(**big).sample, ref_big)


# -- dype_rope.enable: the pipeline's own token count -------------------------------------------------------


@pytest.mark.parametrize(
    "pipeline, row, attrs",
    [
        # BriaPipeline's vae_scale_factor is 2 ** len(block_out_channels) = 16 for its 4-block VAE, and it packs 2 x 2
        ("diffusers.pipelines.bria.pipeline_bria.BriaPipeline", "BRIA", dict(vae_scale_factor=16)),
        # Krea2Pipeline: vae_scale_factor 8 (2 ** len(temperal_downsample)), patch_size 2 by default
        ("diffusers.pipelines.krea2.pipeline_krea2.Krea2Pipeline", "KREA2", dict(vae_scale_factor=8, patch_size=2)),
    ],
)
def test_enable_counts_the_image_tokens_the_pipeline_itself_makes(pipeline, row, attrs):
    """enable()'s resolution shift reads the image's token count: it must be the pipeline's own (its
    prepare_latents), which the row's pixels per token gives where the pipeline's attributes alone would not."""
    import importlib

    import families.ids_flux_like as rows
    from dype_rope.pipelines import image_tokens

    module, _, name = pipeline.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    pipe = cls.__new__(cls)  # the pipeline's own methods on the attributes its __init__ sets; no weights needed
    pipe.__dict__.update(transformer=getattr(rows, row).build(), **attrs)
    for height, width in ((1024, 1024), (2048, 1536)):
        latents = pipe.prepare_latents(1, 16, height, width, torch.float32, "cpu", None)
        latents = latents[0] if isinstance(latents, tuple) else latents
        assert image_tokens(pipe, height, width) == latents.shape[1]
