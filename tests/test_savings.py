"""savings: measured ratios projected onto a folder and onto IDC's RMS collection (offline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.reader_builders import write_native, wsi_dataset
from wsitranscode.cli import main
from wsitranscode.codecs.base import EncodeSettings
from wsitranscode.quality.savings import UNKNOWN, measured_fractions
from wsitranscode.recode import RecodeOptions, recode
from wsitranscode.validate import dciodvfy_path

RMS_KIND = "1.2.840.10008.1.2.1+1.2.840.10008.1.2.4.90 | RGB+YBR_RCT"


@pytest.fixture(scope="module")
def measured(rms_like_slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("savings")
    recoded = out / "recoded"
    settings = EncodeSettings(quality=70)
    assert not recode(rms_like_slide, recoded, RecodeOptions("jpeg", settings, workers=2)).failed
    report = out / "report"
    assert main(["validate", str(rms_like_slide), str(recoded), "-o", str(report), "--sample",
                 "2", "--metrics", "psnr", "--no-dciodvfy"]) == 0  # fmt: skip
    data = json.loads((report / "report.json").read_text())
    (series,) = data["series"]
    return report, series["bytes_after"] / series["bytes_before"], recoded


def _savings(capsys, *argv: str) -> dict:
    assert main(["savings", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_projection_onto_a_folder(measured, rms_like_slide, capsys):
    report, fraction, _ = measured
    before = sum(p.stat().st_size for p in rms_like_slide.rglob("*.dcm"))
    result = _savings(capsys, "--measured", str(report), "--archive", str(rms_like_slide),
                      "--price-per-tb-month", "10")  # fmt: skip
    assert result["series"] == 1
    assert result["tb_before"] == pytest.approx(before / 1e12)
    assert result["tb_after"] == pytest.approx(before * fraction / 1e12)
    assert result["saved_per_year"] == pytest.approx((before - before * fraction) / 1e12 * 120)
    assert result["notes"] == []  # the folder's kind of slide was measured


def test_projection_onto_the_rms_collection_works_offline(measured, capsys):
    idc_index_data = pytest.importorskip("idc_index_data")
    import pyarrow.parquet as pq

    report, fraction, _ = measured
    table = pq.read_table(
        idc_index_data.IDC_INDEX_PARQUET_FILEPATH,
        columns=["series_size_MB", "TransferSyntaxUID"],
        filters=[("collection_id", "=", "rms_mutation_prediction"), ("Modality", "=", "SM")],
    ).to_pylist()
    total = sum(r["series_size_MB"] for r in table) * 1e6
    result = _savings(capsys, "--measured", str(report), "--collection", "rms")
    assert result["series"] == len(table) == 419
    assert result["tb_before"] == pytest.approx(total / 1e12)
    assert 3.0 < result["tb_before"] < 3.8
    assert result["tb_after"] == pytest.approx(total * fraction / 1e12, rel=1e-9)
    kinds = {k["kind"]: k for k in result["by_kind"]}
    measured_kind = "1.2.840.10008.1.2.1+1.2.840.10008.1.2.4.90 | RGB+YBR_RCT"
    assert kinds[measured_kind]["series"] == 383
    assert kinds[measured_kind]["measured_by"] == measured_kind
    assert any("pooled" in note for note in result["notes"])  # uncompressed-only, lossy J2K


def test_without_usable_measurements_it_says_so(tmp_path, capsys):
    assert main(["savings", "--measured", str(tmp_path), "--archive", str(tmp_path)]) == 1
    assert "neither a report" in capsys.readouterr().err


def _kinds(result: dict) -> set[str]:
    return {f["kind"] for f in result["fractions"]} | {k["kind"] for k in result["by_kind"]}


def test_a_recode_output_is_grouped_by_its_sources_kind(measured, rms_like_slide, capsys):
    _, fraction, recoded = measured
    result = _savings(capsys, "--measured", str(recoded), "--archive", str(rms_like_slide))
    assert {f["kind"] for f in result["fractions"]} == {RMS_KIND, "all measurements"}
    assert result["notes"] == []  # the archive's kind was measured: no pooled fraction
    (kept,) = [f for f in result["fractions"] if f["kind"] == RMS_KIND]
    assert kept["mean"] == pytest.approx(fraction, rel=1e-3)


def test_a_run_records_sources_gone_its_kind_comes_from_the_archive_or_is_unknown(
    rms_like_slide, wsi_factory, tmp_path, capsys
):
    moved = tmp_path / "moved"
    shutil.copytree(rms_like_slide, moved)
    recoded = tmp_path / "recoded"
    options = RecodeOptions("jpeg", EncodeSettings(quality=70), workers=2)
    assert not recode(moved, recoded, options).failed
    shutil.rmtree(moved)  # the run record names source files that are gone
    _as_written_before_source_kinds(recoded / "wsitranscode-run.json")
    by_uid = _savings(capsys, "--measured", str(recoded), "--archive", str(rms_like_slide))
    assert {f["kind"] for f in by_uid["fractions"]} == {RMS_KIND, "all measurements"}

    other = wsi_factory("savings-other", levels=1, label=False, thumbnail=False, seed=77)
    unknown = _savings(capsys, "--measured", str(recoded), "--archive", str(other))
    assert UNKNOWN in {f["kind"] for f in unknown["fractions"]}
    assert all(kind.strip(" |") for kind in _kinds(unknown))  # never " | "
    assert any("unknown" in note for note in unknown["notes"])


def _as_written_before_source_kinds(record_path: Path) -> None:
    """Strip what newer run records say of their sources' kind, as older records lack it."""
    record = json.loads(record_path.read_text())
    for series in record["series"]:
        series.pop("source_transfer_syntaxes")
        series.pop("source_photometric")
    record_path.write_text(json.dumps(record))


def _gray16_source(folder: Path) -> Path:
    """A minimal 16-bit slide: dciodvfy finds errors in it, which its recode inherits."""
    folder.mkdir()
    ds = wsi_dataset(rows=32, columns=32, total_columns=64, total_rows=64, samples=1, bits=16,
                     photometric="MONOCHROME2")  # fmt: skip
    rng = np.random.default_rng(5)
    tiles = [rng.integers(0, 25, (32, 32), dtype=np.uint16) for _ in range(4)]
    write_native(folder / "level0.dcm", ds, tiles)
    return folder


def test_a_validated_series_with_dciodvfy_errors_is_still_a_measurement(tmp_path, capsys):
    if dciodvfy_path() is None:
        pytest.skip("dciodvfy is not installed")
    import pydicom

    from tests.dicom_checks import published_outputs
    from wsitranscode.dicom.syntaxes import register_with_pydicom

    register_with_pydicom()  # pydicom writes JPEG XL files only once it knows the syntax
    source = _gray16_source(tmp_path / "in")
    recoded = tmp_path / "recoded"
    options = RecodeOptions("jxl", EncodeSettings(quality=85), workers=2)
    assert not recode(source, recoded, options).failed
    for target in published_outputs(recoded):  # an error the source lacks: validate fails
        dataset = pydicom.dcmread(target)
        del dataset.ImageType
        dataset.save_as(target)
    report = tmp_path / "report"
    assert main(["validate", str(source), str(recoded), "-o", str(report), "--sample", "0",
                 "--metrics", "psnr", "--workers", "2"]) == 1  # fmt: skip
    (series,) = json.loads((report / "report.json").read_text())["series"]
    assert any("dciodvfy" in e for e in series["errors"])
    capsys.readouterr()

    result = _savings(capsys, "--measured", str(report), "--archive", str(source))
    (pooled,) = [f for f in result["fractions"] if f["kind"] == "all measurements"]
    assert pooled["n"] == 1
    assert pooled["mean"] == pytest.approx(series["bytes_after"] / series["bytes_before"])
    assert any("used for its sizes" in n for n in result["notes"])


def test_a_series_without_measured_sizes_is_reported_not_silently_dropped():
    rows = [
        {"source_series_uid": "1.2.3", "status": "failed", "bytes_before": 100,
         "bytes_after": 0, "errors": ["frame 1 does not decode"]},
        {"source_series_uid": "1.2.4", "status": "ok", "bytes_before": 100, "bytes_after": 40,
         "source_transfer_syntaxes": ["1.2.840.10008.1.2.1"], "source_photometric": "RGB"},
    ]  # fmt: skip
    measured = measured_fractions(rows)
    assert measured.fractions["1.2.840.10008.1.2.1 | RGB"].mean == pytest.approx(0.4)
    assert measured.fractions["all measurements"].n == 1
    assert measured.notes == ["series 1.2.3: no measured sizes (status failed): not used"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--measured", "{tmp}/nope", "--archive", "{tmp}"], "nope does not exist"),
        (["--measured", "{tmp}", "--archive", "{tmp}/nope"], "nope does not exist"),
        (["--measured", "{tmp}", "--archive", "{tmp}", "--price-per-tb-month", "-5"],
         "must be a number of 0 or more, not '-5'"),
        (["--measured", "{tmp}", "--archive", "{tmp}", "--price-per-tb-month", "nan"],
         "must be a number of 0 or more, not 'nan'"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert main(["savings", *(a.replace("{tmp}", str(tmp_path)) for a in argv)]) == 2
    problems = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(problems) == 1 and message in problems[0], problems


def test_a_run_record_names_the_kind_of_its_sources_without_reading_them(
    wsi_factory, tmp_path, capsys
):
    """The run record carries each series' source syntaxes and photometric, so savings groups a
    recode by source kind after the source files have moved and the archive is another slide."""
    explicit = "1.2.840.10008.1.2.1"
    source = tmp_path / "in"
    shutil.copytree(wsi_factory("kind-a", transfer_syntax=explicit, levels=1, label=False,
                                thumbnail=False, seed=1), source)  # fmt: skip
    archive = wsi_factory("kind-b", transfer_syntax=explicit, levels=1, label=False,
                          thumbnail=False, seed=2)  # fmt: skip
    out = tmp_path / "out"
    assert recode(source, out, RecodeOptions("jxl", EncodeSettings(quality=80))).exit_code() == 0
    (series,) = json.loads((out / "wsitranscode-run.json").read_text())["series"]
    assert series["source_transfer_syntaxes"] == [explicit]
    assert series["source_photometric"] == "RGB"
    source.rename(tmp_path / "moved")
    result = _savings(capsys, "--measured", str(out), "--archive", str(archive))
    kinds = {f["kind"] for f in result["fractions"]}
    assert f"{explicit} | RGB" in kinds, result
