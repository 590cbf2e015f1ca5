"""`wsitranscode report` over a recode in which one series failed: the failed series keeps its
status in every output, has no savings figures (never "100 % saved" from 0 bytes after) and
is left out of the totals."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pydicom
import pytest

from tests.dicom_checks import wipe_frame_body
from wsitranscode.cli import main

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture(scope="module")
def one_failed(wsi_factory, tmp_path_factory) -> tuple[Path, dict]:
    """A recode output of two series, the second failed (a source frame does not decode)."""
    folder = tmp_path_factory.mktemp("report-failed") / "in"
    for name, seed in (("good", 51), ("spoiled", 52)):
        src = wsi_factory(f"report-{name}", transfer_syntax=JPEG_BASELINE, levels=1,
                          label=False, thumbnail=False, seed=seed)  # fmt: skip
        shutil.copytree(src, folder / name)
    victim = next(
        p
        for p in sorted((folder / "spoiled").rglob("*.dcm"))
        if int(pydicom.dcmread(p, stop_before_pixels=True).NumberOfFrames) > 2
    )
    wipe_frame_body(victim, 1)
    out = folder.parent / "out"
    assert main(["recode", str(folder), "-o", str(out), "--codec", "jpeg", "--q", "70",
                 "--workers", "2"]) == 1  # fmt: skip
    record = json.loads((out / "wsitranscode-run.json").read_text())
    assert sorted(s["status"] for s in record["series"]) == ["failed", "ok"]
    return out, record


def test_a_failed_series_has_its_status_and_no_savings_in_every_output(
    one_failed, tmp_path, capsys
):
    out, record = one_failed
    (ok,) = [s for s in record["series"] if s["status"] == "ok"]
    (failed,) = [s for s in record["series"] if s["status"] == "failed"]
    agg = tmp_path / "agg"
    assert main(["report", str(out), "-o", str(agg)]) == 1

    with (agg / "series.csv").open() as handle:
        rows = {r["source_series_uid"]: r for r in csv.DictReader(handle)}
    bad = rows[failed["series_instance_uid"]]
    assert bad["status"] == "failed"
    assert bad["savings_percent"] == bad["bytes_after"] == bad["ratio"] == bad["bpp"] == ""
    assert rows[ok["series_instance_uid"]]["status"] == "ok"
    assert float(rows[ok["series_instance_uid"]]["savings_percent"]) < 100
    assert "1 failed series left out" in capsys.readouterr().out

    data = json.loads((agg / "report.json").read_text())
    (bad_json,) = [s for s in data["series"] if s["status"] == "failed"]
    assert bad_json["savings_percent"] is None and bad_json["bytes_after"] is None
    totals = data["totals"]
    assert totals["series"] == 2 and totals["measured"] == 1 and totals["failed"] == 1
    assert totals["bytes_before"] == ok["summary"]["bytes_in"]
    assert totals["bytes_after"] == ok["summary"]["bytes_out"]

    html = (agg / "report.html").read_text()
    assert "<th class='l'>status</th>" in html and "<td class='l ok'>ok</td>" in html
    (failed_row,) = [r for r in html.split("<tr>") if "<td class='l err'>failed</td>" in r]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", failed_row)
    # recode, status, source series, bytes before, then bytes after, ratio, bpp, savings %
    assert cells[1] == "failed" and cells[4:8] == ["", "", "", ""], cells


def test_missing_inputs_are_usage_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "agg")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope does not exist" in err and "\n" not in err
    assert not (tmp_path / "agg").exists()


def test_an_interrupted_series_is_not_a_measurement(one_failed, tmp_path, capsys):
    """Ctrl-C leaves a series staged with the instances done so far: their sizes are not the
    series' sizes, so it gets no savings figures either."""
    out, record = one_failed
    record = json.loads(json.dumps(record))  # the fixture's, shared with other tests
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for series in record["series"]:
        if series["status"] == "ok":
            series["status"] = "interrupted"
    (copy / "wsitranscode-run.json").write_text(json.dumps(record))
    main(["report", str(copy), "-o", str(tmp_path / "agg"), "--json"])
    rows = json.loads(capsys.readouterr().out)["series"]
    (stopped,) = [s for s in rows if s["status"] == "interrupted"]
    assert stopped["savings_percent"] is None and stopped["bytes_after"] is None


def test_a_validate_report_and_its_recode_output_count_each_series_once(
    one_failed, tmp_path, capsys
):
    """`report VALIDATED OUT` (or one folder twice) counted every series twice: doubled
    bytes in report, and n=2 for one series in savings, whose interval then shrank to nothing."""
    out, _ = one_failed
    checked = tmp_path / "checked"
    main(["validate", str(out.parent / "in"), str(out), "-o", str(checked), "--sample", "1",
          "--metrics", "psnr", "--no-dciodvfy", "--workers", "2"])  # fmt: skip
    capsys.readouterr()
    main(["report", str(checked), str(out), str(out), "-o", str(tmp_path / "agg"), "--json"])
    data = json.loads(capsys.readouterr().out)
    uids = [s["recoded_series_uid"] for s in data["series"]]
    assert len(uids) == len(set(uids)) == 2  # the ok series (validated) and the failed one
    (ok,) = [s for s in data["series"] if s.get("status") != "failed"]
    assert "psnr-frames" in ok["metrics"]  # the validated row was kept, not the record's
    main(["savings", "--measured", str(checked), str(out), "--archive", str(out.parent / "in"),
          "--json"])  # fmt: skip
    pooled = [f for f in json.loads(capsys.readouterr().out)["fractions"]
              if f["kind"] == "all measurements"]  # fmt: skip
    assert pooled[0]["n"] == 1
