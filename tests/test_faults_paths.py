"""Paths: no attribute value reaches an output path, and symbolic links in the input are not
followed out of it unless asked."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pydicom
import pytest

from tests.dicom_checks import tree_hashes
from wsitranscode.cli import main
from wsitranscode.recode import RUN_RECORD_NAME

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
OUTPUT_NAME = re.compile(r"^2\.25\.\d+/\d{3}-[a-z0-9_]+\.dcm$")

HOSTILE = {
    "PatientID": "../../x",
    "PatientName": "../../../../tmp/evil",
    "StudyInstanceUID": "/abs/study",
    "SeriesInstanceUID": "1.2/../../evil",
    "ContainerIdentifier": "../container",
    "SeriesDescription": "..\\..\\windows",
}


@pytest.fixture
def slide(wsi_factory):
    return wsi_factory(
        "paths", transfer_syntax=JPEG_BASELINE, levels=2, tile_size=128, label=True, seed=5
    )


def _spoil(path: Path, flavor: str | None) -> None:
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UIDs we want
        for keyword, value in HOSTILE.items():
            setattr(ds, keyword, value)
        if flavor is not None:
            ds.ImageType = ["ORIGINAL", "PRIMARY", flavor, "NONE"]
        ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("flavor", ["../../EVIL", "/etc/passwd", "A/B", "", "VOLUME\\..", "ÜBER"])
def test_hostile_attribute_values_never_reach_a_path(slide, tmp_path, flavor):
    inp = tmp_path / "work" / "in"
    shutil.copytree(slide, inp)
    files = sorted(inp.glob("*.dcm"))
    for path in files:
        _spoil(path, flavor if path.name == "label.dcm" else None)
    before = tree_hashes(tmp_path)
    out = tmp_path / "work" / "out"
    code = main(["recode", str(inp), "-o", str(out), "--codec", "jxl", "--effort", "1"])
    created = set(tree_hashes(tmp_path)) - set(before)
    outside = [p for p in created if not p.startswith("work/out/")]
    assert outside == []
    for name in created:
        relative = name.removeprefix("work/out/")
        assert relative == RUN_RECORD_NAME or OUTPUT_NAME.match(relative), name
    assert all(tree_hashes(tmp_path).get(k) == v for k, v in before.items())  # inputs untouched
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    (series,) = record["series"]
    if flavor == "":
        assert code == 1 and "ImageType has no value 3" in series["error"]
    else:
        assert code == 0, series["error"]
        assert len(series["instances"]) == len(files)


def _outside_slide(wsi_factory, tmp_path: Path) -> Path:
    src = wsi_factory("outside", transfer_syntax=JPEG_BASELINE, levels=1, label=False, seed=6)
    outside = tmp_path / "elsewhere"
    shutil.copytree(src, outside)
    return outside


def test_symlinks_out_of_the_input_are_not_followed_unless_asked(slide, wsi_factory, tmp_path):
    inp = tmp_path / "in"
    shutil.copytree(slide, inp / "own")
    outside = _outside_slide(wsi_factory, tmp_path)
    (inp / "linked-folder").symlink_to(outside, target_is_directory=True)
    (inp / "own" / "linked-file.dcm").symlink_to(sorted(outside.glob("*.dcm"))[0])
    before = tree_hashes(outside)

    out = tmp_path / "out"
    assert main(["recode", str(inp), "-o", str(out), "--codec", "jxl", "--effort", "1"]) == 0
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    assert len(record["series"]) == 1
    skipped = {Path(s["path"]).name: s["reason"] for s in record["skipped_files"]}
    assert skipped["linked-folder"].startswith("symbolic link")
    assert skipped["linked-file.dcm"].startswith("symbolic link")

    followed = tmp_path / "out-followed"
    argv = ["recode", str(inp), "-o", str(followed), "--codec", "jxl", "--effort", "1"]
    assert main([*argv, "--follow-symlinks"]) == 0
    record = json.loads((followed / RUN_RECORD_NAME).read_text())
    assert len(record["series"]) == 2  # the linked slide too (its file twice: a duplicate)
    assert tree_hashes(outside) == before


def test_output_folder_reached_through_a_symlink_into_the_input_is_refused(slide, tmp_path):
    inp = tmp_path / "in"
    shutil.copytree(slide, inp)
    (tmp_path / "sneaky").symlink_to(inp, target_is_directory=True)
    before = tree_hashes(inp)
    code = main(["recode", str(inp), "-o", str(tmp_path / "sneaky" / "out"), "--codec", "jxl"])
    assert code == 2
    assert tree_hashes(inp) == before
