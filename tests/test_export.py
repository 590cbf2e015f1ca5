"""export: a series in a private transfer syntax back to a standard one, both predecessors named."""

from __future__ import annotations

import json

import pydicom

from tests.dicom_checks import dciodvfy_errors, published_outputs
from wsitranscode.cli import main

EXPLICIT = "1.2.840.10008.1.2.1"


def _values(ds: pydicom.Dataset, keyword: str) -> list:
    element = ds[keyword]
    return list(element.value) if element.VM > 1 else [element.value]


def test_webp_series_exports_to_standard_jxl(wsi_factory, tmp_path, capsys):
    from wsidicom import WsiDicom

    src = wsi_factory("export-src", transfer_syntax=EXPLICIT, levels=2, label=True)
    private, standard = tmp_path / "webp", tmp_path / "jxl"
    assert main(["recode", str(src), "-o", str(private), "--codec", "webp", "--q", "80"]) == 0
    capsys.readouterr()
    assert main(["export", str(private), "-o", str(standard), "--codec", "jxl", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [s["status"] for s in result["series"]] == ["ok"]

    originals = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in src.rglob("*.dcm")
    }
    webps = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p
        for p in published_outputs(private)
    }
    outputs = published_outputs(standard)
    assert len(outputs) == len(webps)
    for path in outputs:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.112"
        assert "NON-STANDARD" not in ds.SeriesDescription.split("]")[-1]
        first, second = ds.SourceImageSequence
        assert first.ReferencedSOPInstanceUID in webps
        assert first.PurposeOfReferenceCodeSequence[0].CodeValue == "121330"  # lossy predecessor
        assert second.ReferencedSOPInstanceUID in originals
        assert ds.LossyImageCompression == "01"
        methods = _values(ds, "LossyImageCompressionMethod")
        assert len(methods) == 2 and methods[-1] == "ISO_18181_1"
        assert len(_values(ds, "LossyImageCompressionRatio")) == 2
        assert dciodvfy_errors(path) == []
    series_dir = next(p for p in standard.iterdir() if p.is_dir())
    with WsiDicom.open(src) as before, WsiDicom.open(series_dir) as after:
        assert [lv.size.to_tuple() for lv in before.levels] == [
            lv.size.to_tuple() for lv in after.levels
        ]


def test_standard_series_are_skipped(wsi_factory, tmp_path, capsys):
    src = wsi_factory("export-src", transfer_syntax=EXPLICIT, levels=2, label=True)
    out = tmp_path / "out"
    assert main(["export", str(src), "-o", str(out), "--codec", "jxl", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [s["status"] for s in result["series"]] == ["skipped"]
    assert not published_outputs(out)


def test_summary_table_is_titled_export(wsi_factory, tmp_path, capsys):
    src = wsi_factory("export-src", transfer_syntax=EXPLICIT, levels=2, label=True)
    out = tmp_path / "out"
    assert main(["export", str(src), "-o", str(out), "--codec", "jxl"]) == 0
    printed = capsys.readouterr().out
    assert f"export → {out}" in printed and "recode →" not in printed
