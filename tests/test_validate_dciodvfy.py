"""validate's dciodvfy check counts only the errors a recoded file adds to its source's.

Real third-party files are often invalid (the EZ-WSI sample misses about twenty Type 1
attributes); a recode may not add errors, and must not be blamed for the ones it was given.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from tests.dicom_checks import published_outputs
from wsitranscode.cli import main
from wsitranscode.dicom.syntaxes import register_with_pydicom

EZ_WSI = Path("dicom/ez-wsi/multiframe_camelyon_challenge_image.dcm")


@pytest.fixture(scope="module")
def invalid_source_recoded(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ez") / "in"
    folder.mkdir()
    shutil.copy2(shared_data / EZ_WSI, folder)
    out = folder.parent / "out"
    assert main(["recode", str(folder), "-o", str(out), "--codec", "jxl", "--workers", "2"]) == 0
    return folder, out


def _validate(source: Path, recoded: Path, report: Path, capsys) -> tuple[int, dict]:
    code = main(["validate", str(source), str(recoded), "-o", str(report), "--sample", "2",
                 "--metrics", "psnr", "--workers", "2", "--json"])  # fmt: skip
    return code, json.loads(capsys.readouterr().out)


def test_errors_inherited_from_the_source_are_notes_not_failures(
    invalid_source_recoded, tmp_path, capsys
):
    source, out = invalid_source_recoded
    code, report = _validate(source, out, tmp_path / "report", capsys)
    (series,) = report["series"]
    (check,) = series["dciodvfy"]
    assert code == 0, series["errors"]
    assert check["errors"] == 0 and check["inherited"] >= 10, check
    assert any("inherited from the source" in note for note in series["notes"])


def test_an_error_the_source_lacks_still_fails(invalid_source_recoded, tmp_path, capsys):
    source, out = invalid_source_recoded
    broken = tmp_path / "out"
    shutil.copytree(out, broken)
    (target,) = published_outputs(broken)
    register_with_pydicom()  # pydicom writes JPEG XL files only once it knows the syntax
    dataset = pydicom.dcmread(target)
    del dataset.ImageType  # Type 1, present in the source
    dataset.save_as(target)
    code, report = _validate(source, broken, tmp_path / "report", capsys)
    (series,) = report["series"]
    (check,) = series["dciodvfy"]
    assert code == 1
    assert check["errors"] >= 1 and any("ImageType" in m for m in check["messages"]), check
    assert any("its source lacks" in error for error in series["errors"])
