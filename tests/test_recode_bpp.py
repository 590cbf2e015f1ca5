"""recode --bpp: the quality chosen on a tissue sample brings the tissue frames within 5 %."""

from __future__ import annotations

import json

import pytest

from wsitranscode.cli import main
from wsitranscode.recode import RUN_RECORD_NAME

EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module")
def slide(wsi_factory):
    return wsi_factory("bpp", transfer_syntax=EXPLICIT, levels=3, label=True, thumbnail=True)


@pytest.mark.parametrize(("codec", "target"), [("jxl", 0.8), ("webp", 1.0)])
def test_target_bitrate_within_five_percent(slide, tmp_path, codec, target, capsys):
    out = tmp_path / "out"
    assert main(["recode", str(slide), "-o", str(out), "--codec", codec, "--bpp", str(target)]) == 0
    assert "chosen for" in capsys.readouterr().out
    (series,) = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    rc = series["rate_control"]
    assert 0 <= rc["quality"] <= 100 and rc["target_bpp"] == target
    assert abs(rc["tissue_bpp"] - target) / target <= 0.05, rc
    # a rerun resumes with the recorded choice rather than searching again
    assert main(["recode", str(slide), "-o", str(out), "--codec", codec, "--bpp", str(target)]) == 0
    (again,) = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    assert again["status"] == "done-before" and again["rate_control"] == rc


def test_per_tile_targeting_records_the_qualities(slide, tmp_path):
    out = tmp_path / "out"
    code = main(
        [
            "recode",
            str(slide),
            "-o",
            str(out),
            "--codec",
            "webp",
            "--bpp",
            "1.0",
            "--bpp-per-tile",
            "--only",
            "volume",
        ]
    )
    assert code == 0
    (series,) = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    assert series["rate_control"]["per_tile"] is True
    level0 = series["instances"][0]
    q = level0["tile_quality"]
    assert 0 <= q["min"] <= q["median"] <= q["max"] <= 100


def test_unreachable_target_is_a_clear_error(slide, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["recode", str(slide), "-o", str(out), "--codec", "jpeg", "--bpp", "40"]) == 1
    assert "out of reach" in capsys.readouterr().err
