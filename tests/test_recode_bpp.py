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
    every = [i["tile_quality"] for i in series["instances"]]
    low, high = min(t["min"] for t in every), max(t["max"] for t in every)
    label = f"webp q{low}-{high} per tile for 1 bpp"
    assert _labels(slide, out, tmp_path) == [label, label]


def _labels(slide, out, tmp_path) -> list[str]:
    """How validate and report name the one recoded series."""
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert (
            main(
                [
                    "validate",
                    str(slide),
                    str(out),
                    "-o",
                    str(tmp_path / "v"),
                    "--sample",
                    "1",
                    "--metrics",
                    "psnr",
                    "--no-dciodvfy",
                    "--workers",
                    "2",
                    "--json",
                ]
            )
            == 0
        )
    (checked,) = json.loads(printed.getvalue())["series"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", str(out), "-o", str(tmp_path / "r"), "--json"]) == 0
    (aggregated,) = json.loads(printed.getvalue())["series"]
    return [checked["label"], aggregated["label"]]


def test_a_bitrate_run_is_named_by_the_quality_it_chose(slide, tmp_path):
    out = tmp_path / "out"
    assert main(["recode", str(slide), "-o", str(out), "--codec", "jxl", "--bpp", "0.8",
                 "--only", "volume"]) == 0  # fmt: skip
    (series,) = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    label = f"jxl q{series['rate_control']['quality']} for 0.8 bpp"
    assert _labels(slide, out, tmp_path) == [label, label]


def test_unreachable_target_is_a_clear_error(slide, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["recode", str(slide), "-o", str(out), "--codec", "jpeg", "--bpp", "40"]) == 1
    assert "out of reach" in capsys.readouterr().err


def test_a_per_tile_label_spans_every_instance():
    from wsitranscode.recode import run_label

    fingerprint = {"codec": "webp", "target_bpp": 1.0, "bpp_per_tile": True}
    series = {"instances": [{"tile_quality": {"min": 40, "median": 50, "max": 61}},
                            {"tile_quality": {"min": 20, "median": 70, "max": 95}}]}  # fmt: skip
    assert run_label(fingerprint, series) == "webp q20-95 per tile for 1 bpp"
    assert run_label(fingerprint, series["instances"][0]) == "webp q40-61 per tile for 1 bpp"
