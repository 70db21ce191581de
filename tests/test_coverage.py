"""The coverage report (`dype-rope models`, dype_rope.coverage) and the README's supported-models table generated
from the family table."""

from __future__ import annotations

from pathlib import Path

import pytest

from dype_rope import coverage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    return {e["class"]: e for e in coverage.diffusers_coverage()}


def test_every_status_is_one_of_four_and_every_entry_names_its_host(report):
    assert report and all(e["status"] in coverage.STATUSES and e["host"] == "diffusers" for e in report.values())


def test_a_row_of_the_table_a_hand_written_adapter_and_a_detected_class_are_supported(report):
    t = "diffusers.models.transformers."
    flux3 = report[t + "transformer_flux3.Flux3Transformer2DModel"]
    assert flux3["status"] == "supported" and "row 'flux3'" in flux3["detail"]
    assert report[t + "transformer_flux.FluxTransformer2DModel"]["detail"] == "adapter 'flux'"
    # Chroma has no class registration: FLUX's detector takes it by its FluxPosEmbed
    chroma = report[t + "transformer_chroma.ChromaTransformer2DModel"]
    assert chroma["status"] == "supported" and "FluxPosEmbed" in chroma["detail"]


def test_a_refused_class_carries_the_reason_patch_gives(report):
    omnigen = report["diffusers.models.transformers.transformer_omnigen.OmniGenTransformer2DModel"]
    assert omnigen["status"] == "refused" and "one-dimensional over the flattened sequence" in omnigen["detail"]
    audio = report["diffusers.models.transformers.stable_audio_transformer.StableAudioDiTModel"]
    assert audio["status"] == "refused" and "audio" in audio["detail"]


def test_models_without_rope_and_unknown_rope_models_are_told_apart(report):
    pixart = report["diffusers.models.transformers.pixart_transformer_2d.PixArtTransformer2DModel"]
    assert pixart["status"] == "no rope"

    class SomeNewDiT:  # a class nothing registers, in a module with a rotary encoding
        pass

    status, detail = coverage.classify(SomeNewDiT, "class SomeNewDiT:\n    def forward(self, x, rotary_emb): ...\n")
    assert status == "unknown" and "docs/families.md" in detail
    assert coverage.classify(SomeNewDiT, "class SomeNewDiT:\n    pass\n")[0] == "no rope"


def test_the_report_prints_every_status_with_its_count():
    entries = [
        coverage._entry("diffusers", "a.b.Supported", "supported", "row 'x'"),
        coverage._entry("diffusers", "a.b.Unknown", "unknown", "no row"),
    ]
    text = coverage.format_report(entries)
    assert "supported (1)" in text and "refused (0)" in text and "unknown (1)" in text and "Unknown" in text


def test_the_readme_table_is_generated_from_the_family_table():
    from dype_rope.adapters.families import BUILTIN_FAMILIES as FAMILIES

    table = coverage.readme_table()
    lines = table.splitlines()
    assert lines[0].startswith("| family |")
    for row in FAMILIES:
        module = f"`{row.module}`" if row.module else "-"  # "-": tables passed as a forward argument
        assert any(line.startswith(f"| {row.title or row.name} |") and f"| {module} |" in line for line in lines)
    flux3 = next(line for line in lines if line.startswith("| FLUX.3 |"))
    assert "64 x 64 (1024 x 1024 px)" in flux3 and "`Flux3Transformer2DModel`" in flux3
    bria = next(line for line in lines if line.startswith("| Bria |"))
    assert "`timestep / 1000`" in bria and "ids, cos_sin_interleaved" in bria
    assert "`timestep` (sigma)" in flux3


def test_the_readme_holds_the_generated_table():
    """Regenerate with `python -m dype_rope.coverage --readme` between the markers."""
    text = (ROOT / "README.md").read_text()
    assert coverage.BEGIN in text and coverage.END in text, (
        f"README.md needs the markers {coverage.BEGIN} / {coverage.END} around the supported-models table"
    )
    held = text.split(coverage.BEGIN, 1)[1].split(coverage.END, 1)[0].strip("\n")
    assert held == coverage.readme_table().strip("\n"), "run `python -m dype_rope.coverage --readme`"


def test_dype_rope_models_prints_the_report(capsys):
    from dype_rope.app.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "supported (" in out and "Flux3Transformer2DModel" in out and "OmniGenTransformer2DModel" in out
    assert main(["models", "--readme"]) == 0
    assert capsys.readouterr().out == coverage.readme_table()


def test_ernie_image_is_a_row_of_the_angles_mechanism(report):
    ernie = report["diffusers.models.transformers.transformer_ernie_image.ErnieImageTransformer2DModel"]
    assert ernie["status"] == "supported" and "row 'ernie-image'" in ernie["detail"]
    line = next(line for line in coverage.readme_table().splitlines() if line.startswith("| Ernie-Image |"))
    assert "64 x 64 (1024 x 1024 px)" in line and "ids -> angles" in line and "`timestep / 1000`" in line
def test_sana_wm_is_a_row_and_its_refiner_is_refused(report):
    t = "diffusers.models.transformers."
    stage1 = report[t + "transformer_sana_wm.SanaWMTransformer3DModel"]
    assert stage1["status"] == "supported" and "row 'sana_wm'" in stage1["detail"]
    refiner = report[t + "transformer_sana_wm_refiner.SanaWMLTX2RefinerTransformer3DModel"]
    assert refiner["status"] == "refused" and "keys stored after RoPE" in refiner["detail"]


def test_cosmos3_omni_is_a_row(report):
    cosmos3 = report["diffusers.models.transformers.transformer_cosmos3.Cosmos3OmniTransformer"]
    assert cosmos3["status"] == "supported" and "row 'cosmos3_omni'" in cosmos3["detail"]
def test_anyflow_and_anyflow_far_are_supported_and_minimax_h3_refused(report):
    t = "diffusers.models.transformers."
    anyflow = report[t + "transformer_anyflow.AnyFlowTransformer3DModel"]
    assert anyflow["status"] == "supported" and "row 'anyflow'" in anyflow["detail"]
    far = report[t + "transformer_anyflow_far.AnyFlowFARTransformer3DModel"]
    assert far["status"] == "supported" and "row 'anyflow_far'" in far["detail"]
    h3 = report[t + "transformer_minimax_h3.MiniMaxH3Transformer3DModel"]
    assert h3["status"] == "refused" and "aspect-normalised grid of fixed area" in h3["detail"]
def test_joyimage_classes_are_rows_of_the_method_mechanism(report):
    t = "diffusers.models.transformers."
    edit = report[t + "transformer_joyimage.JoyImageEditTransformer3DModel"]
    plus = report[t + "transformer_joyimage_edit_plus.JoyImageEditPlusTransformer3DModel"]
    assert edit["status"] == "supported" and "row 'joyimage-edit'" in edit["detail"]
    assert plus["status"] == "supported" and "row 'joyimage-edit-plus'" in plus["detail"]
