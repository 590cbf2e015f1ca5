"""validate with the learned metrics end to end: LPIPS and the ResNet18 feature similarity, with
weights given by path; and reported unavailable, never computed, when there are none."""

from __future__ import annotations

import json

import pytest

from wsitranscode.cli import main
from wsitranscode.codecs.base import EncodeSettings
from wsitranscode.recode import RecodeOptions, recode

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def source(wsi_factory):
    return wsi_factory("validate-learned", levels=1, label=False, thumbnail=True, seed=31)


def _recoded(source, folder, **settings):
    result = recode(source, folder, RecodeOptions(codec="jxl", settings=EncodeSettings(**settings)))
    assert not result.failed
    return folder


def _validate(source, recoded, capsys, *extra: str) -> dict:
    args = [
        "validate",
        str(source),
        str(recoded),
        "-o",
        str(recoded.parent / "report"),
        "--metrics",
        "psnr,lpips,feature",
        "--sample",
        "4",
        "--no-dciodvfy",
        "--json",
        *extra,
    ]
    code = main(args)
    report = json.loads(capsys.readouterr().out)
    report["exit_code"] = code
    return report


def _series_metrics(report: dict) -> dict:
    (series,) = report["series"]
    return series


def test_lpips_and_features_measure_a_lossy_recode(
    source, tmp_path, capsys, alexnet_weights, ciga_format_weights
):
    lossy = _recoded(source, tmp_path / "lossy", quality=40)
    report = _validate(
        source,
        lossy,
        capsys,
        "--lpips-weights",
        str(alexnet_weights),
        "--feature-weights",
        str(ciga_format_weights),
    )
    assert report["exit_code"] == 0
    series = _series_metrics(report)
    assert not series["unavailable"]
    assert series["metrics"]["lpips"]["mean"] > 0
    features = [name for name in series["metrics"] if name.startswith("feature")]
    assert len(features) == 6
    assert all(series["metrics"][name]["mean"] < 1.0 for name in features)


def test_without_weights_the_metrics_are_unavailable_with_the_reason(
    source, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    lossy = _recoded(source, tmp_path / "lossy", quality=40)
    report = _validate(source, lossy, capsys, "--no-download")
    series = _series_metrics(report)
    assert set(series["unavailable"]) == {"lpips", "feature"}
    assert "--lpips-weights" in series["unavailable"]["lpips"]
    assert "--feature-weights" in series["unavailable"]["feature"]
    assert "lpips" not in series["metrics"]
    assert not any(name.startswith("feature") for name in series["metrics"])
    assert series["metrics"]["psnr"]["mean"] > 20
