"""The `dype-rope` command line: every command end to end on tiny models, its printed numbers against the
schedules' closed forms, its files decoded by independent readers, and one-line errors for bad arguments."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dype_rope.app.cli import build_parser, main
from dype_rope.app.demo import DEMO_FLUX, run_demo

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+), (\S+)\s+(\S+), (\S+)\s+(\S+), (\S+)$", re.M)
TIMING = re.compile(
    r"step time, median of (\d+) steps: stock ([\d.]+) ms, patched ([\d.]+) ms; "
    r"patched/stock = ([\d.]+)x \(ratio of the two medians\)"
)


def _rows(text: str) -> np.ndarray:
    """Per-step rows of the demo: step, t, kappa, scale x2, stretch x2, mscale x2."""
    return np.array([[float(v) for v in m] for m in ROW.findall(text)])


def _is_ratio(ratio: float, num: float, den: float, ratio_half: float, half: float) -> bool:
    """Whether printed `ratio` (rounded to +-ratio_half) can be num / den for printed num, den (each rounded to
    +-half): |ratio * den - num| within the rounding of all three, written without dividing by den."""
    return abs(ratio * den - num) <= ratio * half + den * ratio_half + ratio_half * half + half


# -- demo -----------------------------------------------------------------------------------------------------
def test_demo_prints_the_schedule_and_writes_the_figure(tmp_path, capsys):
    out = tmp_path / "schedules.png"
    assert main(["demo", "--base-grid", "4", "--factor", "2", "--steps", "6", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    rows = _rows(text)
    t = np.linspace(1.0, 0.0, 7)[:6]
    assert rows.shape == (6, 9)
    np.testing.assert_array_equal(rows[:, 0], np.arange(1, 7))
    np.testing.assert_allclose(rows[:, 1], t, atol=5e-4)
    np.testing.assert_allclose(rows[:, 2], t**2, atol=5e-5)  # Dy-YaRN: kappa = 1 * t^2
    np.testing.assert_allclose(rows[:, 3:5], 2.0)
    np.testing.assert_allclose(rows[:, 7:9], 0.1 * math.log(2) + 1, atol=5e-4)
    assert np.all(np.diff(rows[:, 5]) <= 0) and np.all(rows[:, 5] >= 1) and np.all(rows[:, 5] <= 2)
    assert float(re.search(r"max \|patched - stock\| = (\S+)", text).group(1)) > 0
    with Image.open(out) as im:
        assert im.size == (1200, 900) and im.text["Software"].startswith("dype_rope")


def test_demo_timing_line_agrees_with_itself(capsys):
    """The printed ratio is the printed patched median over the printed stock median (up to their rounding),
    and the result carries the same three numbers."""
    res = run_demo(base_grid=4, factor=(2, 2), steps=5, plot=None)
    steps, stock, patched, ratio = TIMING.search(capsys.readouterr().out).groups()
    assert int(steps) == 5
    stock, patched, ratio = float(stock), float(patched), float(ratio)
    assert (stock, patched, ratio) == (round(res.stock_ms, 2), round(res.patched_ms, 2), round(res.time_ratio, 3))
    assert res.time_ratio == res.patched_ms / res.stock_ms
    assert _is_ratio(ratio, patched, stock, 0.0005, 0.005)  # the medians are printed to 0.01 ms, the ratio to 0.001


def test_demo_without_matplotlib_runs_and_says_how_to_get_the_figure(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    out = tmp_path / "schedules.png"
    assert main(["demo", "--base-grid", "2", "--factor", "2", "--steps", "2", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert len(_rows(text)) == 2 and TIMING.search(text)
    assert "no figure: drawing it needs matplotlib (pip install 'dype-rope[plot]')" in text
    assert not out.exists()
    assert main(["plot", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "dype-rope: error: `dype-rope plot` draws with matplotlib: pip install 'dype-rope[plot]'"


@pytest.mark.parametrize("method", ["pi", "ntk"])
def test_demo_steps_match_the_closed_forms(method):
    dim = DEMO_FLUX["axes_dims_rope"][1]
    res = run_demo(base_grid=4, factor=(3, 2), steps=5, method=method, plot=None, stream=io.StringIO())
    assert res.grid == (12, 8)
    for info in res.steps:
        k = 2 * info.t**2  # defaults lambda_s = lambda_t = 2
        assert info.kappa == pytest.approx(k, rel=1e-12)
        assert info.scale == (3.0, 2.0)
        for s, stretch in zip((3.0, 2.0), info.stretch):
            if method == "pi":  # every pair divided by max(1, s^kappa)
                expected = max(1.0, s**k)
            else:  # pair j stretched by (theta'/theta)^(2j/dim); geometric mean over j: exponent (dim/2-1)/dim
                expected = max(1.0, s ** (dim / (dim - 2) * k)) ** ((dim / 2 - 1) / dim)
            assert stretch == pytest.approx(expected, rel=1e-12)
        assert info.mscale == (1.0, 1.0)


@pytest.mark.parametrize("method", ["yarn", "pi"])
def test_demo_rows_are_what_the_patched_forward_uses(method):
    """The printed stretch and mscale, recomputed on the host, against the tables the model really built."""
    import dype_rope
    from dype_rope.app.demo import image_ids, step_info, tiny_flux_transformer

    model = tiny_flux_transformer()
    handle = dype_rope.patch(model, method=method, base_grid=(4, 4), backend="torch")
    seen = []
    model.pos_embed.register_forward_hook(lambda mod, args, out: seen.append(out))
    grid, text = (12, 8), 3
    d_text, d_rows, _ = DEMO_FLUX["axes_dims_rope"]
    g = torch.Generator().manual_seed(0)
    for t in (1.0, 0.6, 0.2):
        with torch.inference_mode():
            model(
                hidden_states=torch.randn(1, grid[0] * grid[1], DEMO_FLUX["in_channels"], generator=g),
                encoder_hidden_states=torch.randn(1, text, DEMO_FLUX["joint_attention_dim"], generator=g),
                pooled_projections=torch.randn(1, DEMO_FLUX["pooled_projection_dim"], generator=g),
                timestep=torch.tensor([t]), img_ids=image_ids(*grid), txt_ids=torch.zeros(text, 3),
            )
        cos, sin = seen[-1]
        token = text + grid[1]  # row 1, column 0: the rows axis at position 1
        channels = slice(d_text, d_text + d_rows, 2)  # interleaved: one channel per pair
        m = torch.hypot(cos[token, channels].double(), sin[token, channels].double())
        inv = torch.atan2(sin[token, channels].double(), cos[token, channels].double())
        plain = 1.0 / 10000.0 ** (torch.arange(0, d_rows, 2, dtype=torch.float64) / d_rows)
        info = step_info(handle, 0, t, grid)
        assert info.mscale[0] == pytest.approx(float(m[0]), rel=1e-6)
        assert info.stretch[0] == pytest.approx(float(torch.exp(torch.log(plain / inv).mean())), rel=1e-5)
    handle.remove()


def test_demo_isotropic_uses_the_largest_ratio():
    res = run_demo(base_grid=4, factor=(3, 1), steps=2, method="pi", aspect="isotropic", plot=None,
                   stream=io.StringIO())
    assert all(info.scale == (3.0, 3.0) for info in res.steps)


def test_demo_changes_nothing_at_the_base_grid(capsys):
    assert main(["demo", "--base-grid", "6", "--factor", "1", "--steps", "3", "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert float(re.search(r"max \|patched - stock\| = (\S+)", text).group(1)) == 0.0
    np.testing.assert_array_equal(_rows(text)[:, 3:7], 1.0)


def test_python_dash_m_without_command_runs_the_demo(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dype_rope", "--base-grid", "2", "--factor", "2", "--steps", "2", "--no-plot"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(_rows(proc.stdout)) == 2 and "DyPE demo" in proc.stdout


# -- plot -----------------------------------------------------------------------------------------------------
def test_plot_writes_svg_and_png(tmp_path, capsys):
    svg = tmp_path / "s.svg"
    assert main(["plot", "--dim", "8", "--base", "4", "--target", "16", "--num-t", "11", "-o", str(svg)]) == 0
    root = ET.parse(svg).getroot()
    groups = {g.get("id"): g for g in root.iter("{http://www.w3.org/2000/svg}g") if "/" in (g.get("id") or "")}
    # three method panels x (plain, static, Dy-) of 4 pairs each, and mscale: plain + (static, Dy-) x 3 methods
    assert len(groups) == 3 * 3 + 1 + 2 * 3
    assert sum(len(g.findall("{http://www.w3.org/2000/svg}path")) for g in groups.values()) == 3 * 3 * 4 + 1 + 2 * 3
    png = tmp_path / "s.png"
    assert main(["plot", "--methods", "yarn", "--lambda-t", "3", "-o", str(png)]) == 0
    with Image.open(png) as im:
        assert im.size == (1200, 450)  # one row of panels: YaRN and mscale
    assert f"wrote {png}" in capsys.readouterr().out


# -- bench ----------------------------------------------------------------------------------------------------
def test_bench_prints_both_tables(capsys):
    # One timed call per model: every median is that call, so the columns must agree exactly (up to printing).
    assert main(["bench", "--tiny", "--grids", "4,6", "--repeats", "1"]) == 0
    text = capsys.readouterr().out
    model_rows = re.findall(
        r"^\| cpu \| torch \| (\d+)x\d+ \|.*\| ([\d.]+) \| ([\d.]+) \| ([+-][\d.]+) \| ([\d.]+)x \| ([\d.]+)x \|$", text, re.M
    )
    assert [int(r[0]) for r in model_rows] == [4, 6]
    for _, stock, patched, extra, ratio, best in model_rows:
        stock, patched, extra, ratio, best = map(float, (stock, patched, extra, ratio, best))
        assert _is_ratio(ratio, patched, stock, 0.0005, 0.005) and ratio == best
        assert abs(extra - (patched - stock)) <= 0.0101
    kernel_rows = re.findall(
        r"^\| cpu \| (\d+) \| (tables|tables \+ q,k) \| (diffusers|dype torch) \| ([\d.]+) \| ([\d.]+)x \|$", text, re.M
    )
    assert [(int(n), work, impl) for n, work, impl, *_ in kernel_rows] == [
        (n, work, impl) for n in (32 + 16, 32 + 36) for work in ("tables", "tables + q,k") for impl in ("diffusers", "dype torch")
    ]
    for (_, _, _, ref_ms, ref_speedup), (_, _, _, ms, speedup) in zip(kernel_rows[::2], kernel_rows[1::2]):
        assert float(ref_speedup) == 1.0
        # speedup: the diffusers row's ms over this row's
        assert _is_ratio(float(speedup), float(ref_ms), float(ms), 0.005, 0.0005), (ref_ms, ms, speedup)
    assert "triton backend: needs CUDA" in text


def test_bench_summary_of_hand_timed_rounds():
    from dype_rope.app.bench import summarise

    stock, patched = [0.010, 0.020, 0.040], [0.012, 0.020, 0.060]  # rounds: ratios 1.2, 1.0, 1.5; extra 2, 0, 20 ms
    t = summarise("cpu", "torch", 8, 96, stock, patched)
    assert (t.stock_ms, t.patched_ms) == pytest.approx((20.0, 20.0))
    assert t.ratio == pytest.approx(1.2)  # median of the paired ratios, not 20 / 20
    assert t.best_ratio == pytest.approx(1.2)  # 12 ms / 10 ms
    assert t.extra_ms == pytest.approx(2.0)
    assert t.megapixels == pytest.approx((8 * 16) ** 2 / 1e6)


def _bench_model_module():
    spec = importlib.util.spec_from_file_location("bench_model", ROOT / "benchmarks" / "bench_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_section_is_replaced_alone():
    replace = _bench_model_module().replace_section
    title = "## Model-level overhead"
    doc = "# Benchmark results\n\n## Kernels\n\nkernel table\n\n## Model-level overhead\n\nold\n\n## Later\n\nkeep\n"
    new = replace(doc, title, "new numbers")
    assert new == "# Benchmark results\n\n## Kernels\n\nkernel table\n\n## Model-level overhead\n\nnew numbers\n\n## Later\n\nkeep\n"
    assert replace("# R\n\n## Kernels\n\nk\n", title, "x") == "# R\n\n## Kernels\n\nk\n\n## Model-level overhead\n\nx\n"
    assert replace("", title, "x") == "# Benchmark results\n\n## Model-level overhead\n\nx\n"
    assert replace(replace(doc, title, "y"), title, "y") == replace(doc, title, "y")


# -- arguments ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv,needle",
    [
        (["demo", "--steps", "0"], "--steps"),
        (["demo", "--factor", "4x"], "--factor"),
        (["demo", "--method", "rope2"], "--method"),
        (["demo", "--lambda-s", "-1"], "--lambda-s"),
        (["demo", "-o", "out.jpg"], ".png"),
        (["demo", "-o", "no/such/folder/x.png"], "does not exist"),
        (["plot", "--dim", "7"], "even"),
        (["plot", "--methods", "pi,rope2"], "rope2"),
        (["plot", "--theta", "nan"], "--theta"),
        (["plot", "--num-t", "1"], "--num-t"),
        (["generate", "--prompt", "x"], "--model"),
        (["generate", "--model", "no/such/pipeline/dir", "--prompt", "x"], "no such model folder: 'no/such/pipeline/dir'"),
        (["generate", "--model", "/nonexistent", "--prompt", "x"], "no such model folder: '/nonexistent'"),
        (["generate", "--model", "nobody-here/no-such-model", "--prompt", "x"], "nor a pipeline of that id in the local"),
        (["generate", "--model", ".", "--prompt", "x", "--device", "cpu", "--backend", "triton"], "--backend triton"),
        (["generate", "--model", ".", "--prompt", "x", "--shift=700"], "--shift"),
        (["generate", "--model", ".", "--prompt", "x", "--shift=710"], "--shift"),
        (["generate", "--model", ".", "--prompt", "x", "--shift=-1e9"], "--shift"),
        (["generate", "--model", ".", "--prompt", "x", "-o", "x.jpg"], ".png"),
        (["bench", "--device", "cuda:0"] if not torch.cuda.is_available() else ["bench", "--device", "tpu"], "device"),
        (["generate", "--model", ".", "--prompt", "x", "--device", "warp-drive"], "--device"),
        (["rotate"], "rotate"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, needle, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("dype-rope: error:") and needle in err and "Traceback" not in err


def _unwritable(tmp_path: Path) -> dict[str, str]:
    return {
        "a folder": str(tmp_path),
        "a missing folder": str(tmp_path / "missing" / "x.png"),
        "a read-only place": "/sys/dype-rope-test.png",  # sysfs: no one may create files there, root included
    }


@pytest.mark.parametrize("where", ["a folder", "a missing folder", "a read-only place"])
@pytest.mark.parametrize("command", ["demo", "plot", "generate"])
def test_unwritable_output_is_refused_before_any_work(command, where, tmp_path, capsys, monkeypatch):
    import dype_rope.app.demo
    import dype_rope.app.generate
    import dype_rope.app.plots

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    for module, name in [(dype_rope.app.demo, "run_demo"), (dype_rope.app.generate, "load_pipeline"),
                         (dype_rope.app.generate, "render"), (dype_rope.app.plots, "schedule_figure")]:
        monkeypatch.setattr(module, name, no_work)
    path = _unwritable(tmp_path)[where]
    argv = {"demo": ["demo"], "plot": ["plot"], "generate": ["generate", "--model", str(tmp_path), "--prompt", "x"]}
    assert main([*argv[command], "-o", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"dype-rope: error: cannot write {path!r}: "), err
    reason = {"a folder": "it is a folder", "a missing folder": "does not exist", "a read-only place": "ermission denied"}
    assert reason[where] in err
    assert not Path(path).is_file()


def _documented_errors() -> dict[str, str]:
    """docs/cli.md's table of errors: the argument column -> the message column, backticks removed."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split("## Errors", 1)[1]
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| `")]
    return {cells[0].strip("| `"): cells[1].strip(" |") for cells in rows}


@pytest.mark.parametrize(
    "row,argv",
    [
        ("-o` with another suffix", ["demo", "-o", "x.jpg"]),
        ("generate --model /nonexistent", ["generate", "--model", "/nonexistent", "--prompt", "x"]),
        ("generate --backend triton` on a CPU device",
         ["generate", "--model", ".", "--prompt", "x", "--device", "cpu", "--backend", "triton"]),
        ("generate --shift=700", ["generate", "--model", ".", "--prompt", "x", "--shift=700"]),
    ],
)
def test_the_documented_errors_are_the_real_ones(row, argv, capsys):
    message = _documented_errors()[row]
    first = message.split("` (")[0].strip("`").split(", ...")[0]  # the message itself, before any remark
    assert main(argv) == 2
    assert first in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"demo", "plot", "generate", "bench", "models"}
    for name, sub in commands.items():
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"
            for opt in action.option_strings:
                assert opt in text


# -- generate -------------------------------------------------------------------------------------------------
def _tiny_flux_pipeline(folder: Path) -> None:
    """A FluxPipeline of tiny seeded components, tokenizers included, built offline and saved to `folder`."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6),
    )
    vae = AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1, latent_channels=1,
        norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )
    clip = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=1, vocab_size=64, projection_dim=32,
    ))
    t5 = T5EncoderModel(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4))
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in letters:
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [(c, -3.0) for c in letters]
    tokenizer_2 = T5TokenizerFast(vocab=pieces, extra_ids=0)
    FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip, tokenizer=tokenizer,
        text_encoder_2=t5, tokenizer_2=tokenizer_2, transformer=transformer,
    ).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory):
    # FluxPipeline's text encoders and tokenizers are transformers classes; the dev extra installs it.
    folder = tmp_path_factory.mktemp("tiny_flux_pipeline")
    _tiny_flux_pipeline(folder)
    return folder


def _reference_images(folder: Path, prompt: str, seed: int, steps: int, s: float) -> dict[str, np.ndarray]:
    """The three images of `--compare --method pi` made without dype_rope: the stock diffusers pipeline, its
    image positions divided by s (PI) or by max(1, s ** kappa(t)), kappa = 2 t^2 (Dy-PI), by hooks on its
    own position embedding; DyPE's scheduler shift ("pinned": mu = max_shift) by a scheduler config whose
    shift line is flat at max_shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    pipe = FluxPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    stock_scheduler = pipe.scheduler
    pinned = FlowMatchEulerDiscreteScheduler.from_config(
        stock_scheduler.config, use_dynamic_shifting=True, base_shift=stock_scheduler.config.max_shift
    )
    divisor = {"by": 1.0}
    state = {}

    def keep_t(module, args, kwargs):
        state["t"] = float(kwargs["timestep"].reshape(-1)[0])

    def divide_positions(module, args):
        ids = args[0].clone()
        ids[:, 1:] = ids[:, 1:] / divisor["by"](state["t"])
        return (ids,)

    pipe.transformer.register_forward_pre_hook(keep_t, with_kwargs=True)
    pipe.transformer.pos_embed.register_forward_pre_hook(divide_positions)
    variants = {
        "stock": (stock_scheduler, lambda t: 1.0),
        "static": (pinned, lambda t: s),
        "dynamic": (pinned, lambda t: max(1.0, s ** (2.0 * t**2))),
    }
    out = {}
    for name, (scheduler, by) in variants.items():
        pipe.scheduler, divisor["by"] = scheduler, by
        image = pipe(prompt=prompt, height=32, width=32, num_inference_steps=steps,
                     generator=torch.Generator("cpu").manual_seed(seed), output_type="pil").images[0]
        out[name] = np.asarray(image.convert("RGB")).astype(int)
    return out


def test_generate_saves_image_settings_and_comparison(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "fox.png"
    argv = ["generate", "--model", str(tiny_pipeline_dir), "--prompt", "a red fox", "--height", "32", "--width", "32",
            "--steps", "3", "--seed", "7", "--base-grid", "4", "--method", "pi", "-o", str(out), "--compare"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    for label in ("no DyPE", "PI", "Dy-PI"):  # the pipeline's own tqdm bar, named after the variant
        assert re.search(rf"{label}: 100%\|.*\| 3/3", captured.err), captured.err
    with Image.open(out) as im:
        assert im.size == (32, 32)
        meta = json.loads(im.text["dype_rope"])
        dype_image = np.asarray(im.convert("RGB")).astype(int)
    assert meta["method"] == "pi" and meta["dynamic"] is True and meta["lambda_s"] == 2.0 and meta["lambda_t"] == 2.0
    assert meta["shift"] == "pinned"
    assert (meta["prompt"], meta["steps"], meta["seed"], meta["height"], meta["base_grid"]) == ("a red fox", 3, 7, 32, [4, 4])
    grid_path = tmp_path / "fox_compare.png"
    with Image.open(grid_path) as im:
        assert im.size == (96, 32 + 24)
        grid = np.asarray(im.convert("RGB"))[24:].astype(int)
        assert set(json.loads(im.text["dype_rope"])) == {"stock", "static", "dynamic"}
    panels = {"stock": grid[:, :32], "static": grid[:, 32:64], "dynamic": grid[:, 64:]}
    np.testing.assert_array_equal(panels["dynamic"], dype_image)  # same seed, same settings: the same picture
    # 16x16 tokens over a 4x4 base grid: s = 4
    reference = _reference_images(tiny_pipeline_dir, "a red fox", 7, 3, 4.0)
    for name in ("stock", "static", "dynamic"):  # same float64 angles, same 8-bit picture
        np.testing.assert_array_equal(panels[name], reference[name], err_msg=name)
    # the three variants are three different pictures, so a swapped or wrong schedule cannot pass
    assert (reference["static"] != reference["stock"]).any() and (reference["dynamic"] != reference["static"]).any()


def test_generate_refuses_an_image_of_no_tokens_before_sampling(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    import dype_rope.app.generate

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started")

    monkeypatch.setattr(dype_rope.app.generate, "render", no_sampling)
    argv = ["generate", "--model", str(tiny_pipeline_dir), "--prompt", "x", "--height", "1", "--width", "1",
            "-o", str(tmp_path / "x.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    # the tiny pipeline: VAE factor 1 (one block), latents packed 2 x 2 into a token: 2 px per token side
    assert err == ("dype-rope: error: --height 1 --width 1 is 0 image tokens: one token of this pipeline covers "
                   "2x2 px, so each side needs at least 2 px")
    assert not (tmp_path / "x.png").exists()
