"""The command line at its limits: sizes that could never be allocated are refused in one line before any work,
figures are written whole or not at all, and a Ctrl-C while the command starts says "interrupted" (130)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dype_rope.app.cli import main
from dype_rope.app.files import write_atomically
from dype_rope.app.limits import bench_bytes, demo_bytes, host_memory, plot_bytes

ROOT = Path(__file__).resolve().parents[1]


def no_work(*args, **kwargs):
    raise AssertionError("work started before the sizes were checked")


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--factor", "100000", "--no-plot"],
        ["demo", "--base-grid", "100000", "--no-plot"],
        ["bench", "--grids", "8,100000"],
        ["plot", "--dim", "100000000"],
        ["plot", "--num-t", "100000000"],
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_sizes_beyond_memory_are_one_line_and_status_2_before_any_work(argv, capsys, monkeypatch, tmp_path):
    import dype_rope.app.bench
    import dype_rope.app.demo
    import dype_rope.app.plots

    for module, name in [(dype_rope.app.demo, "run_demo"), (dype_rope.app.bench, "run_bench"),
                         (dype_rope.app.plots, "schedule_figure")]:
        monkeypatch.setattr(module, name, no_work)
    if argv[0] == "plot":
        argv = [*argv, "-o", str(tmp_path / "x.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dype-rope: error:"), err
    assert argv[1] in err and "would allocate about" in err and "GiB" in err, err


def test_the_estimates_grow_with_what_is_allocated():
    # hand-derived: the demo's 8 x 8 grid at 4 x 4 is 1024 image tokens + 8 text tokens
    assert demo_bytes(8, (4, 4)) == demo_bytes(32, (1, 1)) == (1024 + 8) * demo_bytes(0, (1, 1)) / 8
    assert bench_bytes(64, 2, 512) == 2 * (64 * 64 + 512) * 3072 * 16 * 2
    assert plot_bytes(56, 101, 3) == (28 * 101 * 7 + 101 * 7) * 64
    memory = host_memory()
    assert memory > 0
    # the defaults fit, with a wide margin
    assert max(demo_bytes(8, (4, 4)), plot_bytes(56, 101, 3), bench_bytes(16, 4, 32)) < memory / 100


def test_factor_with_a_missing_number_names_the_whole_argument(capsys):
    assert main(["demo", "--factor", "3x"]) == 2
    err = capsys.readouterr().err
    assert "'3x'" in err and "ROWSxCOLS" in err and "got ''" not in err


def test_write_atomically_leaves_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old figure")

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"half a fig")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, interrupted)
    assert path.read_bytes() == b"old figure" and [p.name for p in tmp_path.iterdir()] == ["figure.png"]
    write_atomically(path, lambda tmp: tmp.write_bytes(b"new figure"))
    assert path.read_bytes() == b"new figure" and [p.name for p in tmp_path.iterdir()] == ["figure.png"]


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_a_figure_interrupted_while_written_leaves_no_truncated_file(suffix, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from dype_rope.app.plots import save_figure, schedule_figure

    fig = schedule_figure(dim=8, num_t=5)
    path = tmp_path / f"fig{suffix}"
    path.write_bytes(b"previous")
    import matplotlib.figure

    def half_written(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"trunc")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", half_written)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_written)
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, path)
    assert path.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


# A Ctrl-C that lands while torch (or anything after it) is being imported, simulated by an import hook.
INTERRUPT_ON_TORCH = textwrap.dedent(
    """
    import sys

    class CtrlC:
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, CtrlC())
    """
)


@pytest.mark.parametrize(
    "entry",
    ["from dype_rope.app.cli import main; sys.exit(main({argv}))",  # what the dype-rope script runs
     "import runpy; sys.argv = ['dype_rope', *{argv}]; runpy.run_module('dype_rope', run_name='__main__')"],
    ids=["console-script", "python-m"],
)
@pytest.mark.parametrize("argv", [["plot"], ["demo", "--no-plot"], ["bench"]], ids=lambda a: a[0])
def test_ctrl_c_during_start_up_imports_says_interrupted(entry, argv, tmp_path):
    code = INTERRUPT_ON_TORCH + entry.format(argv=repr([*argv, *(["-o", str(tmp_path / "x.png")] if argv == ["plot"] else [])]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "dype-rope: interrupted", done.stderr
