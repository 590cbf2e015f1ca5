"""What `validate` prints: one row per series named as recode names it, in recode's order, each
note once, each undecodable frame counted once, and every PSNR labelled."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.dicom_checks import wipe_frame_body
from wsitranscode.cli import main

SHORT_UID = re.compile(r"…[0-9.]{16}")


@pytest.fixture(scope="module")
def three_series(wsi_factory, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("three") / "in"
    # folder names put the sources in the reverse order of their recoded series' folders
    for prefix, seed in zip("cba", (41, 42, 43), strict=True):
        src = wsi_factory("validate-output", levels=1, label=False, thumbnail=False, seed=seed)
        shutil.copytree(src, folder / f"{prefix}-slide{seed}")
    return folder


@pytest.fixture(scope="module")
def recoded(three_series, tmp_path_factory) -> tuple[Path, list[str]]:
    """The recode output and the series of recode's table, in the order it prints them."""
    out = tmp_path_factory.mktemp("three-out") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["recode", str(three_series), "-o", str(out), "--codec", "jpeg", "--q", "60",
                     "--workers", "2"])  # fmt: skip
    assert code == 0
    return out, SHORT_UID.findall(printed.getvalue())


def test_rows_name_their_series_in_recodes_order_and_notes_print_once(
    three_series, recoded, tmp_path, capsys, monkeypatch
):
    out, recode_order = recoded
    assert len(recode_order) == 3
    record = json.loads((out / "wsitranscode-run.json").read_text())["series"]
    by_folder = sorted(record, key=lambda s: s["output_dir"])
    assert [s["series_instance_uid"] for s in by_folder] != [
        s["series_instance_uid"] for s in record
    ]  # the recoded folders alone would give another order
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    code = main(["validate", str(three_series), str(out), "-o", str(tmp_path / "report"),
                 "--sample", "2", "--metrics", "psnr,lpips,feature", "--no-download",
                 "--no-dciodvfy", "--workers", "2"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert SHORT_UID.findall(printed.out) == recode_order
    notes = [line for line in printed.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 2, printed.err  # lpips and feature unavailable: once each, not per series
    assert sum("lpips" in n for n in notes) == 1
    assert "tile PSNR" in printed.out and "recode's PSNR is that of" in printed.out
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert ["…" + s["source_series_uid"][-16:] for s in data["series"]] == recode_order


def test_an_undecodable_frame_is_one_error(three_series, recoded, tmp_path, capsys):
    out, _ = recoded
    spoiled = tmp_path / "spoiled"
    shutil.copytree(out, spoiled)
    victim = sorted(spoiled.rglob("001-volume.dcm"))[0]
    wipe_frame_body(victim, 5)  # column 1, row 1 of a 4 x 3 grid: in the tissue
    report = tmp_path / "report"
    code = main(["validate", str(three_series), str(spoiled), "-o", str(report), "--sample",
                 "60", "--tile-size", "64", "--metrics", "psnr", "--no-dciodvfy",
                 "--workers", "2"])  # fmt: skip
    assert code == 1
    data = json.loads((report / "report.json").read_text())
    errors = [e for s in data["series"] for e in s["errors"]]
    assert len(errors) == 1, errors
    assert f"{victim}, frame 5:" in errors[0]
    (spoiled_series,) = [s for s in data["series"] if s["errors"]]
    assert spoiled_series["metrics"]["psnr"]["n"] > 0  # the other tiles were still measured
    assert any("cross level-0 frames that did not decode" in n for n in spoiled_series["notes"])
    printed = capsys.readouterr()
    assert re.search(r"│ 1 +│", printed.out)  # the errors column
    (line,) = printed.err.splitlines()  # one line, however long, never wrapped
    assert line.startswith("error: ") and line.endswith(errors[0])
