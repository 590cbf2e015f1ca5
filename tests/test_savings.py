"""savings: measured ratios projected onto a folder and onto IDC's RMS collection (offline)."""

from __future__ import annotations

import json

import pytest

from wsitranscode.cli import main
from wsitranscode.codecs.base import EncodeSettings
from wsitranscode.recode import RecodeOptions, recode


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
    return report, series["bytes_after"] / series["bytes_before"]


def _savings(capsys, *argv: str) -> dict:
    assert main(["savings", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_projection_onto_a_folder(measured, rms_like_slide, capsys):
    report, fraction = measured
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

    report, fraction = measured
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
