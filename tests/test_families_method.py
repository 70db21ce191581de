"""What the method mechanism (adapters/mechanisms/method.py) and its JoyImage rows do beyond the contract suite:
JoyImage's "mrope" text tables, the probe refusing a method that is not plain RoPE, calls from outside the model,
batches mixing diffusion times, an instance attribute already over the method, and dype_rope.enable() on both
JoyImage pipelines (a fixed shift: the scheduler is left alone)."""

from __future__ import annotations

import inspect

import pytest
import torch

import dype_rope
from families.method import JOYIMAGE_EDIT, JOYIMAGE_EDIT_PLUS, JOYIMAGE_TABLES, TINY_JOYIMAGE
from families.row import encoding_calls, interleaved
from families.tiny import tiny
from families.video import video_positions
from reference_dype import rope_pairs

BASE = (3, 4)


def test_mrope_text_tables_follow_the_schedule_after_the_grid():
    """rope_type "mrope": the text sits after the grid's largest index on all three axes and shares the image's
    plan (rows and columns stretched by the image's own ratios), so text-image relative angles stay consistent."""
    model = tiny("JoyImageEditTransformer3DModel", TINY_JOYIMAGE, rope_type="mrope")
    grid, t = (6, 7), 0.375
    x = JOYIMAGE_EDIT.inputs(grid, t)
    with dype_rope.patch(model, base_grid=BASE):
        calls = encoding_calls(model, JOYIMAGE_TABLES, lambda: JOYIMAGE_EDIT.run(model, x))
    (_, (vis, txt)), = calls
    text = x["encoder_hidden_states"].shape[1]
    scales, base_lens = (1.0, 6 / 3, 7 / 4), (1.0, 3.0, 4.0)
    start = max(1, *grid)  # the grid's largest index (6 - 1) plus one
    text_pos = (torch.arange(text, dtype=torch.float64) + start).unsqueeze(-1).expand(-1, 3)
    for table, pos in ((vis, video_positions(1, *grid)), (txt, text_pos)):
        want = torch.stack(rope_pairs(pos, (6, 6, 6), 256.0, scales, t, base_lens, method="yarn"), -1)
        torch.testing.assert_close(interleaved(*table), want, rtol=0, atol=2e-7)


def test_a_method_that_is_not_plain_rope_on_the_declared_layout_is_refused():
    """A subclass (matched by its parent's row) whose tables are 5% off the declared theta: refused, not misread."""
    from diffusers import JoyImageEditTransformer3DModel

    class OffTheta(JoyImageEditTransformer3DModel):
        def get_rotary_pos_embed(self, vis_rope_size, txt_rope_size=None):
            self.theta, theta = self.theta * 1.05, self.theta
            try:
                return super().get_rotary_pos_embed(vis_rope_size, txt_rope_size)
            finally:
                self.theta = theta

    torch.manual_seed(0)
    model = OffTheta(**TINY_JOYIMAGE).eval()
    with pytest.raises(TypeError, match="does not return plain RoPE with theta=256.0"):
        dype_rope.patch(model, base_grid=BASE)
    assert not dype_rope.is_patched(model) and "get_rotary_pos_embed" not in vars(model)


@pytest.mark.parametrize("row, call", [
    (JOYIMAGE_EDIT, lambda m: m.get_rotary_pos_embed([1, 6, 7])),
    (JOYIMAGE_EDIT_PLUS, lambda m: m._get_rotary_pos_embed_for_range((0, 0, 0), (1, 6, 7))),
], ids=["edit", "edit-plus"])
def test_the_method_refuses_calls_outside_the_model(row, call):
    """Also right after a forward: the call's state does not outlive the call."""
    model = row.build()
    with dype_rope.patch(model, base_grid=BASE):
        row.run(model, row.inputs((6, 7), 0.5))
        with pytest.raises(RuntimeError, match="outside the model"):
            call(model)
    call(model)  # the stock method again


def test_edit_mixed_time_batches_are_refused_above_the_base_grid_and_stock_below_it():
    """JoyImage Edit's tables carry no batch dimension: one plan per call."""
    row, model = JOYIMAGE_EDIT, JOYIMAGE_EDIT.build()
    above = row.inputs_at((6, 7), torch.tensor([1000.0, 400.0]), batch=2)
    below = row.inputs_at((3, 4), torch.tensor([1000.0, 400.0]), batch=2)
    ref = row.run(model, below)
    with dype_rope.patch(model, base_grid=BASE):
        assert torch.equal(row.run(model, below), ref)
        with pytest.raises(ValueError, match="share one diffusion time"):
            row.run(model, above)


def _sample(x: dict, i: int, batch: int) -> dict:
    out = {k: v[i : i + 1] if torch.is_tensor(v) and v.dim() and v.shape[0] == batch else v for k, v in x.items()}
    out["shape_list"] = x["shape_list"][i : i + 1]
    return out


def test_edit_plus_gets_one_plan_per_sample():
    """Edit Plus builds every sample's tables with calls of their own and stacks them: a batch whose samples sit at
    different times (batched serving) gives each sample the tables it gets alone, bit for bit, and its output up to
    the batch's own float rounding; each follows the reference at its own t."""
    row, model, batch = JOYIMAGE_EDIT_PLUS, JOYIMAGE_EDIT_PLUS.build(), 3
    times = (1.0, 0.375, 0.0)
    x = row.inputs_at((6, 7), torch.tensor([1000.0 * t for t in times]), batch=batch, cond=(2, 5))
    with dype_rope.patch(model, base_grid=BASE):
        out = []
        (_, (cos, sin)), = encoding_calls(model, JOYIMAGE_TABLES, lambda: out.append(row.run(model, x)))
        for i, t in enumerate(times):
            alone = []
            (_, want), = encoding_calls(model, JOYIMAGE_TABLES, lambda: alone.append(row.run(model, _sample(x, i, batch))))
            assert torch.equal(cos[i : i + 1], want[0]) and torch.equal(sin[i : i + 1], want[1]), i
            torch.testing.assert_close(out[0][i : i + 1], alone[0], rtol=1e-5, atol=1e-5)
            reference = row.layout.expected([((), None)], (6, 7), BASE, t, "per-axis", (2, 5), method="yarn")
            torch.testing.assert_close(interleaved(cos[i], sin[i]), reference[0], rtol=0, atol=2e-7)


def test_remove_puts_back_an_instance_attribute_that_was_over_the_method():
    model = JOYIMAGE_EDIT.build()
    calls = []

    def mine(*args, **kwargs):
        calls.append(1)
        return type(model).get_rotary_pos_embed(model, *args, **kwargs)

    model.get_rotary_pos_embed = mine
    x = JOYIMAGE_EDIT.inputs((6, 7), 0.5)
    ref = JOYIMAGE_EDIT.run(model, x)
    with dype_rope.patch(model, base_grid=BASE):
        calls.clear()  # the install's probe called it too
        assert not torch.equal(JOYIMAGE_EDIT.run(model, x), ref)
        assert len(calls) == 1  # the patch calls what was there, the user's wrapper included
    assert vars(model)["get_rotary_pos_embed"] is mine
    assert torch.equal(JOYIMAGE_EDIT.run(model, x), ref)


def _pipeline(cls_name: str, transformer, scheduler):
    import diffusers

    cls = getattr(diffusers, cls_name)
    parts = {n: None for n in inspect.signature(cls.__init__).parameters if n != "self"}
    parts.update(transformer=transformer, scheduler=scheduler)
    return cls(**parts)


@pytest.mark.parametrize("cls_name, row", [
    ("JoyImageEditPipeline", JOYIMAGE_EDIT), ("JoyImageEditPlusPipeline", JOYIMAGE_EDIT_PLUS),
], ids=["edit", "edit-plus"])
def test_enable_patches_the_transformer_and_keeps_the_fixed_shift(cls_name, row):
    """Both pipelines call retrieve_timesteps without mu: their shift does not depend on the size."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    def schedule(scheduler):
        scheduler.set_timesteps(12)
        return scheduler.timesteps.clone(), scheduler.sigmas.clone()

    pipe = _pipeline(cls_name, row.build(), FlowMatchEulerDiscreteScheduler(shift=3.0))
    want = schedule(FlowMatchEulerDiscreteScheduler(shift=3.0))
    handle = dype_rope.enable(pipe, 2048, 1536)
    assert handle.mu is None and handle.transformer.adapter.name == row.adapter
    assert handle.image_seq_len == (2048 // 16) * (1536 // 16)
    assert all(torch.equal(g, w) for g, w in zip(schedule(pipe.scheduler), want))
    with pytest.raises(ValueError, match="no resolution shift"):
        dype_rope.enable(_pipeline(cls_name, row.build(), FlowMatchEulerDiscreteScheduler()), 2048, 2048,
                         shift="linear")
    handle.remove()
    assert not dype_rope.is_patched(pipe.transformer) and "set_timesteps" not in vars(pipe.scheduler)


@pytest.mark.parametrize("row", [JOYIMAGE_EDIT, JOYIMAGE_EDIT_PLUS], ids=lambda r: r.name)
def test_a_kept_handle_lets_a_dropped_model_go_and_a_copy_is_refused(row):
    """The replacement on the instance ties the patch to the model, never the model to the handle."""
    import copy
    import gc
    import weakref

    model = row.build()
    handle = dype_rope.patch(model, base_grid=BASE)
    row.run(model, row.inputs((6, 7), 0.5))
    with pytest.raises(TypeError, match="deepcopy"):
        copy.deepcopy(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None, "the kept handle kept the model alive"
    assert not handle.active
