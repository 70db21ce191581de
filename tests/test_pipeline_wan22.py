"""Wan 2.2's two-expert pipelines: enable() patches both experts, and remove() restores both."""

from __future__ import annotations

import pytest
import torch

import dype_rope
from families.video import WAN, WAN_SCHEDULER, tiny_wan


def two_expert_pipeline():
    from diffusers import UniPCMultistepScheduler, WanPipeline

    return WanPipeline(
        tokenizer=None, text_encoder=None, vae=None, scheduler=UniPCMultistepScheduler.from_config(WAN_SCHEDULER),
        transformer=tiny_wan(seed=0), transformer_2=tiny_wan(seed=1), boundary_ratio=0.875,
    )


@pytest.mark.parametrize("expert", ["transformer", "transformer_2"])
def test_enable_patches_both_experts_and_remove_restores_them(expert):
    pipe = two_expert_pipeline()
    model = getattr(pipe, expert)
    # a grid above the base one at a noisy step (t = 0.8, the low-noise expert's range starts below 0.875)
    inputs = WAN.inputs((2, 8, 8), 0.8)
    stock = WAN.run(model, inputs)
    handle = dype_rope.enable(pipe, 64, 64, base_grid=(4, 4))
    patched = WAN.run(model, inputs)
    handle.remove()
    restored = WAN.run(model, inputs)
    assert not torch.equal(patched, stock), f"{expert} ran stock under enable()"
    assert torch.equal(restored, stock)
