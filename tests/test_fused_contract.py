"""The fused backend's contract on every family with fused attention (tests/families/, rows with `fused`):
backend="triton" (here under the Triton interpreter) gives what backend="torch" gives, one compiled graph, the
original processors and encoding back on remove(), processors it cannot fuse refused before anything changes.

The tiny models carry learned, random QK-norm weights and a different eps on every norm (q, k, and the text
stream's own norms in joint blocks): a kernel that drops the weight, swaps the eps or normalises text tokens with
the image norm fails the first test.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import dype_rope
from families import FUSED_FAMILIES
from families.row import assert_same_state, state_of

fused_family = pytest.mark.parametrize("row", FUSED_FAMILIES, ids=lambda r: r.name)


def run(row, model, t, backend, dtype=torch.float32):
    f = row.fused
    x = row.inputs(f.grid, t, batch=f.batch, cond=f.cond)
    x = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in x.items()}
    with torch.no_grad(), dype_rope.patch(model, base_grid=f.base, backend=backend):
        return row.output(model(**x))


def attentions(row, model):
    return [m for m in model.modules() if isinstance(m, row.fused.attentions)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@fused_family
def test_triton_backend_matches_torch_backend(row, dtype):
    model = row.build().to(dtype)
    fused, eager = run(row, model, 0.6, "triton", dtype), run(row, model, 0.6, "torch", dtype)
    # the kernels normalise and rotate in float32 with the plan in full precision (the torch path rounds q and k to
    # the model dtype between norm and rotation): allow a few roundings of the model dtype, relative to the
    # output's scale
    tol = 4 * torch.finfo(dtype).eps * eager.float().abs().max()
    assert (fused.float() - eager.float()).abs().max() <= tol


@fused_family
def test_the_norms_matter_so_the_match_above_is_not_vacuous(row):
    """The random norm weights and eps move the output far beyond the tolerance of the match above."""
    model = row.build()
    ref = run(row, model, 0.6, "torch")
    for module in model.modules():
        if hasattr(module, "eps") and getattr(module, "weight", None) is not None and module.weight.dim() == 1:
            module.eps = 1e-6
    tolerance = 4 * torch.finfo(torch.float32).eps * ref.abs().max()
    assert (run(row, model, 0.6, "torch") - ref).abs().max() > 100 * tolerance


@fused_family
def test_dype_reaches_the_kernels(row):
    """A different t gives a different fused output: the rescaled plan reaches the kernels."""
    model = row.build()
    assert not torch.allclose(run(row, model, 1.0, "triton"), run(row, model, 0.05, "triton"), atol=1e-4)


@fused_family
def test_one_graph_across_steps(row):
    f, model = row.fused, row.build()
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    with torch.no_grad(), dype_rope.patch(model, base_grid=f.base, backend="triton"):
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        outs = [row.output(compiled(**row.inputs(f.grid, t))) for t in (1.0, 0.5)]
        want = row.output(model(**row.inputs(f.grid, 0.5)))
    torch._dynamo.reset()
    assert counter.frame_count == 1
    torch.testing.assert_close(outs[1], want)


@fused_family
def test_remove_restores_the_original_processors_and_encoding(row):
    f, model = row.fused, row.build()
    before, encoding = state_of(model), getattr(model, row.encoding)
    processors = [a.processor for a in attentions(row, model)]
    handle = dype_rope.patch(model, base_grid=f.base, backend="triton")
    assert isinstance(getattr(model, row.encoding), f.encoding)
    assert all(type(a.processor) is f.processors[type(a)] for a in attentions(row, model))
    handle.remove()
    assert getattr(model, row.encoding) is encoding
    assert all(a.processor is p for a, p in zip(attentions(row, model), processors))
    assert_same_state(before, state_of(model))


@fused_family
def test_a_processor_it_cannot_fuse_is_refused_and_nothing_changes(row):
    model = row.build()
    attn, custom = row.fused.unsupported(model)
    attn.set_processor(custom)
    before, encoding = state_of(model), getattr(model, row.encoding)
    with pytest.raises(TypeError, match=f"{type(custom).__name__}.*backend='torch'"):
        dype_rope.patch(model, base_grid=row.fused.base, backend="triton")
    assert getattr(model, row.encoding) is encoding and attn.processor is custom
    assert not dype_rope.is_patched(model)
    assert_same_state(before, state_of(model))
