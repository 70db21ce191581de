"""Reference checks of the tables a model method builds in a layout of its own (LTXV / LTX-2, CogVideoX), for
test_comfy_contract's "tables follow DyPE at every step": restated from ComfyUI's code and the paper's float64
formulas (reference_dype), never from dype_rope's plan builder.

Each check takes one sampling's recorded calls (every model call's sigma, and every method call's arguments and
output) and asserts that entries DyPE does not move are the stock method's own, bit for bit, and moved entries are
DyPE's at that call's time.
"""

from __future__ import annotations

import math

import torch

from reference_dype import frequencies, rope_pairs

LTX_THETA, LTX_MAX_POS, LTX_PX = 10000.0, 2048.0, 32  # model_detection's LTX defaults; VAE 32 px, patch 1


def _stock_method(tiny):
    key = f"diffusion_model.{tiny.adapter.family.embedders[0]}"
    return tiny.dype.object_patches[key].original


def _times(tiny, call):
    """DyPE's t of every sample of a call: the flow sigma (LTX), or the model's own timestep / 1000 (CogVideoX)."""
    if tiny.row.time == "timestep":
        sampling = tiny.patcher.get_model_object("model_sampling")
        return (sampling.timestep(call["sigma"]).double() / 1000).tolist()
    return call["sigma"].double().tolist()


def ltx(tiny, calls, rows, cols, base):
    """LTX's centred RoPE: pair k of axis a turns by (pi / 2) theta^(k / (n - 1)) (2 u - 1), u = pixel / 2048, at
    flat pair pad + 3 k + a. DyPE acts on its standard form (theta' = theta^(n / (n - 1)), pair j = n - 1 - k,
    positions p = (pi / 2) theta (2u - 1)), YaRN's base length the base grid in units of p."""
    config = tiny.row.unet_config
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    n, middle = dim // 6, config.get("use_middle_indices_grid", False)
    pad = dim // 2 - 3 * n
    theta_std, reach = LTX_THETA ** (n / (n - 1)), math.pi / 2 * LTX_THETA
    step_p = 2 * reach * LTX_PX / LTX_MAX_POS
    scales = {1: rows / base[0], 2: cols / base[1]}
    bases = {1: base[0], 2: base[1]}
    original = _stock_method(tiny)
    av = config["image_model"] == "ltxav"
    for call in calls:
        assert call["tables"], "the model embedded no positions through the replaced method"
        for args, kwargs, (_, out) in zip(call["args"], call["kwargs"], call["tables"]):
            stock = original(*args, **kwargs)
            table, stock = (out[0][0][0], stock[0][0][0]) if av else (out[0], stock[0])
            if av:  # the audio tables and both cross-modal tables are the stock ones
                for got, want in ((out[0][1][0], original(*args, **kwargs)[0][1][0]),
                                  (out[1][0][0], original(*args, **kwargs)[1][0][0])):
                    assert torch.equal(got, want)
            coords = (args[0][0] if av else args[0]).double()  # [B, 3, S(, 2)] pixel coordinates
            if coords.dim() == 4:
                coords = coords.mean(-1) if middle else coords[..., 0]
            flat = table.flatten(2, 3)  # [B, S, D/2, 2, 2]
            flat_stock = stock.flatten(2, 3)
            for b, t in enumerate(_times(tiny, call)):
                want, moved = flat_stock[b].double().clone(), torch.zeros(dim // 2, dtype=torch.bool)
                for a in (1, 2):
                    omega, m = frequencies(2 * n, theta_std, bases[a] * step_p, scales[a], t)
                    plain, _ = frequencies(2 * n, theta_std, bases[a] * step_p, 1.0, t)
                    p = reach * (2 * coords[b, a] / LTX_MAX_POS - 1)
                    for k in range(n):
                        j = n - 1 - k
                        if omega[j] == plain[j] and m == 1.0:
                            continue
                        idx = pad + 3 * k + a
                        angle = p * float(omega[j])
                        c, s = angle.cos() * m, angle.sin() * m
                        want[:, idx] = torch.stack([c, -s, s, c], dim=-1).view(-1, 2, 2)
                        moved[idx] = True
                assert moved.any(), "no pair moved above the base grid"
                assert torch.equal(flat[b][:, ~moved], flat_stock[b][:, ~moved])
                torch.testing.assert_close(flat[b][:, moved].double(), want[:, moved], rtol=0, atol=2e-6)


def cogvideox(tiny, calls, rows, cols, base):
    """CogVideoX's (cos, sin) [T*H*W, head_dim]: frame, row and column blocks (head_dim / 4, 3 head_dim / 8 twice),
    each pair's value twice, theta 10000, positions (frame, row x step, col x step), step 1.875 for 1.0 (no
    patch_size_t), 1 for 1.5; the extents in those units, (n - 1) x step + 1."""
    config = tiny.row.unet_config
    d = config["attention_head_dim"]
    axes = (d // 4, d // 8 * 3, d // 8 * 3)
    step = 1.0 if config.get("patch_size_t") else 1.875
    extent = lambda n: (n - 1) * step + 1  # noqa: E731
    scales = (1.0, extent(rows) / extent(base[0]), extent(cols) / extent(base[1]))
    base_lens = (1.0, extent(base[0]), extent(base[1]))
    moved = torch.cat([torch.full((dim,), a > 0) for a, dim in enumerate(axes)])  # channels of rows and columns
    original = _stock_method(tiny)
    for call in calls:
        assert call["tables"], "the model built no tables through the replaced method"
        times = _times(tiny, call)
        assert len(set(times)) == 1  # ComfyUI gives every sample of a call one sigma: one table for the call
        for args, kwargs, (_, (cos, sin)) in zip(call["args"], call["kwargs"], call["tables"]):
            h, w, t = args[:3]
            stock_cos, stock_sin = original(*args, **kwargs)
            pos = torch.cartesian_prod(*(torch.arange(n, dtype=torch.float64) * s
                                         for n, s in ((t, 1.0), (h, step), (w, step))))
            want_cos, want_sin = rope_pairs(pos, axes, 10000.0, scales, times[0], base_lens)
            for got, stock, want in ((cos, stock_cos, want_cos), (sin, stock_sin, want_sin)):
                assert torch.equal(got[:, ~moved], stock[:, ~moved])
                torch.testing.assert_close(got[:, moved].double(), want.repeat_interleave(2, -1)[:, moved],
                                           rtol=0, atol=2e-6)


CHECKS = {"ltx": ltx, "cogvideox": cogvideox}
