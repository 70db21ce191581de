"""dype_rope.enable() on the diffusers pipelines of the grid families (adapters/families/by_grid.py): pipelines with
a resolution-independent shift keep their scheduler as it is, those computing a resolution shift mu get the
pinned one; either way the transformer is patched and remove() restores both. Pipelines are built around tiny
transformers, with no text encoder or VAE (enable() touches neither)."""

from __future__ import annotations

import inspect

import pytest
import torch

import dype_rope
from families.grid import CHRONOEDIT, GLM_IMAGE, HUNYUAN_IMAGE, KANDINSKY5, MOTIF_VIDEO, SKYREELS_V2
from families.video import HUNYUAN_VIDEO, WAN


def pipeline(cls_name: str, transformer, scheduler):
    import diffusers

    cls = getattr(diffusers, cls_name)
    names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    parts = {n: None for n in names}
    parts.update(transformer=transformer, scheduler=scheduler)
    return cls(**parts)


def unipc():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0)


def euler(**config):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


def schedule(scheduler, **kwargs):
    scheduler.set_timesteps(12, **kwargs)
    return scheduler.timesteps.clone(), scheduler.sigmas.clone()


FIXED = [
    ("SkyReelsV2Pipeline", SKYREELS_V2, unipc),
    ("ChronoEditPipeline", CHRONOEDIT, lambda: euler(shift=5.0)),
    ("HunyuanImagePipeline", HUNYUAN_IMAGE, lambda: euler(shift=5.0)),
    ("Kandinsky5T2VPipeline", KANDINSKY5, lambda: euler(shift=5.0)),
    ("WanPipeline", WAN, unipc),
    ("WanVideoToVideoPipeline", WAN, unipc),
    ("HunyuanVideoPipeline", HUNYUAN_VIDEO, lambda: euler(shift=7.0)),
]


@pytest.mark.parametrize("cls_name, row, make_scheduler", FIXED, ids=[f[0] for f in FIXED])
def test_pipelines_with_a_fixed_shift_keep_their_schedule(cls_name, row, make_scheduler):
    pipe = pipeline(cls_name, row.build(), make_scheduler())
    want = schedule(make_scheduler())
    handle = dype_rope.enable(pipe, 960, 1664)
    assert handle.mu is None and dype_rope.is_patched(pipe.transformer)
    assert handle.transformer.adapter.name == row.adapter
    got = schedule(pipe.scheduler)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    handle.remove()
    assert not dype_rope.is_patched(pipe.transformer) and "set_timesteps" not in vars(pipe.scheduler)


SHIFTED = [("MotifVideoPipeline", MOTIF_VIDEO), ("GlmImagePipeline", GLM_IMAGE)]


@pytest.mark.parametrize("cls_name, row", SHIFTED, ids=[s[0] for s in SHIFTED])
def test_pipelines_computing_a_resolution_shift_get_the_pinned_one(cls_name, row):
    """Whatever mu the pipeline computes for the large image, the schedule is the one at max_shift."""
    pipe = pipeline(cls_name, row.build(), euler(use_dynamic_shifting=True, max_shift=1.15))
    with dype_rope.enable(pipe, 960, 1664) as handle:
        assert handle.mu == 1.15 and dype_rope.is_patched(pipe.transformer)
        got = schedule(pipe.scheduler, mu=3.0)
    want = schedule(euler(use_dynamic_shifting=True, max_shift=1.15), mu=1.15)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert not dype_rope.is_patched(pipe.transformer)


def test_video_pipelines_count_tokens_per_frame_through_their_spatial_factor():
    """Hand-derived: SkyReels' VAE factor 8 (vae_scale_factor_spatial) and (1, 2, 2) patches: 16 px per token."""
    from dype_rope.pipelines import image_tokens

    pipe = pipeline("SkyReelsV2Pipeline", SKYREELS_V2.build(), unipc())
    assert image_tokens(pipe, 960, 1664) == 60 * 104
