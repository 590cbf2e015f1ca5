"""validate and report end to end: real recodes of slides built from tissue, real decoders,
dciodvfy, wsidicom as the independent reader, and headless Chromium for the HTML report."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from wsitranscode.cli import main
from wsitranscode.codecs.base import EncodeSettings
from wsitranscode.dicom.frames import FrameReader
from wsitranscode.recode import RecodeOptions, recode
from wsitranscode.validate import ValidateOptions, validate

CHROMIUM = Path("/usr/bin/chromium")
FAST = {"metrics": ("psnr", "ssim", "ms-ssim"), "run_dciodvfy": False, "workers": 2}


@pytest.fixture(scope="module")
def source(wsi_factory) -> Path:
    return wsi_factory("validate-src", levels=2, label=False, thumbnail=True, seed=21)


def _recode(source: Path, out: Path, codec: str, quality: int = 70, lossless=False) -> Path:
    settings = EncodeSettings(quality=quality, lossless=lossless)
    result = recode(source, out, RecodeOptions(codec=codec, settings=settings, workers=2))
    assert not result.failed
    return out


@pytest.fixture(scope="module")
def lossy(source, tmp_path_factory) -> Path:
    return _recode(source, tmp_path_factory.mktemp("lossy") / "out", "jpeg", 60)


@pytest.fixture(scope="module")
def lossless(source, tmp_path_factory) -> Path:
    return _recode(source, tmp_path_factory.mktemp("lossless") / "out", "j2k", lossless=True)


def _volume_file(folder: Path) -> Path:
    return sorted(folder.rglob("001-volume.dcm"))[0]


def test_lossy_recode_passes_and_tiles_match_an_independent_reader(source, lossy, tmp_path):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from wsidicom import WsiDicom

    report = validate(source, lossy, ValidateOptions(sample=6, seed=3, output_dir=tmp_path, **FAST))
    assert report.ok, report.all_errors()
    (series,) = report.series
    assert series.pairing == "references" and series.lossless is False
    assert series.codec == "jpeg" and series.quality == 60
    assert series.bytes_after < series.bytes_before
    assert series.ratio == pytest.approx(series.bytes_before / series.bytes_after, rel=1e-3)
    samples = [t for t in report.tiles if t.kind == "sample"]
    assert 0 < len(samples) <= 6
    with WsiDicom.open(source) as original, WsiDicom.open(_volume_file(lossy).parent) as recoded:
        for tile in samples[:3]:
            a = np.asarray(original.read_region((tile.x, tile.y), 0, (224, 224)).convert("RGB"))
            b = np.asarray(recoded.read_region((tile.x, tile.y), 0, (224, 224)).convert("RGB"))
            assert tile.values["psnr"] == pytest.approx(
                peak_signal_noise_ratio(a, b, data_range=255), abs=0.05
            )
            expected_ssim = structural_similarity(
                a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                data_range=255, channel_axis=-1,
            )  # fmt: skip
            assert tile.values["ssim"] == pytest.approx(expected_ssim, abs=2e-3)
    assert series.metrics["psnr"]["n"] == len(samples)
    assert series.metrics["psnr"]["worst"] == min(t.values["psnr"] for t in samples)
    assert series.metrics["psnr-frames"]["n"] == sum(1 for t in report.tiles if t.kind == "frame")
    assert len(series.worst_tiles) == min(4, len(samples))
    assert (tmp_path / series.thumbnail).is_file()


def test_lossless_recode_is_pixel_exact_and_passes_dciodvfy(source, lossless):
    options = ValidateOptions(sample=4, metrics=("psnr",), workers=2)
    report = validate(source, lossless, options)
    assert report.ok, report.all_errors()
    (series,) = report.series
    assert series.lossless is True and series.pixel_exact is True
    assert series.frames_compared == series.frames
    assert all(check["errors"] == 0 for check in series.dciodvfy)
    assert all("skipped" not in check for check in series.dciodvfy)


def _corrupt_frame(path: Path, frame: int) -> None:
    """Overwrite the middle of one frame's bytes in place (lengths unchanged)."""
    with FrameReader(path) as reader:
        data = reader.read_frame(frame)
    blob = path.read_bytes()
    start = blob.index(data)
    middle = start + len(data) // 3
    garbage = bytes((b * 37 + 11) % 256 for b in range(len(data) // 3))
    path.write_bytes(blob[:middle] + garbage + blob[middle + len(garbage) :])


@pytest.mark.parametrize("kind", ["lossy", "lossless"])
def test_a_corrupted_frame_fails_and_is_named(kind, source, lossy, lossless, tmp_path):
    folder = tmp_path / kind
    shutil.copytree(lossy if kind == "lossy" else lossless, folder)
    target = _volume_file(folder)
    _corrupt_frame(target, 3)
    report_dir = tmp_path / "report"
    code = main(
        ["validate", str(source), str(folder), "-o", str(report_dir), "--sample", "3",
         "--metrics", "psnr", "--no-dciodvfy", "--workers", "2"]
    )  # fmt: skip
    assert code == 1
    data = json.loads((report_dir / "report.json").read_text())
    errors = [e for s in data["series"] for e in s["errors"]]
    assert any(f"{target}, frame 3:" in e for e in errors), errors
    assert all("\n" not in e for e in errors)
    assert not any("frame 2:" in e or "frame 4:" in e for e in errors)
    assert data["ok"] is False and data["series"][0]["frames_compared"] >= 1


def _rewrite(path: Path, edit) -> None:
    ds = pydicom.dcmread(path)
    edit(ds)
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)


def test_missing_frames_and_mismatched_geometry_are_errors(source, lossy, tmp_path):
    from pydicom.encaps import encapsulate, generate_frames

    folder = tmp_path / "spoiled"
    shutil.copytree(lossy, folder)
    level0 = _volume_file(folder)

    def drop_two_frames(ds):
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
        ds.PixelData = encapsulate(frames[:-2])
        ds.NumberOfFrames = len(frames) - 2

    _rewrite(level0, drop_two_frames)
    level1 = sorted(folder.rglob("002-volume.dcm"))[0]
    _rewrite(
        level1, lambda ds: setattr(ds, "TotalPixelMatrixColumns", ds.TotalPixelMatrixColumns + 7)
    )
    report = validate(source, folder, ValidateOptions(sample=3, **FAST))
    errors = report.all_errors()
    assert not report.ok
    assert any(str(level0) in e and "2 source frame(s) have no recoded frame" in e for e in errors)
    assert any(str(level0) in e and "number of frames" in e for e in errors)
    assert any(str(level1) in e and "total columns" in e for e in errors)
    assert any("levels not in the source" in e for e in errors)
    assert report.series[0].frames_compared > 0  # what could be compared still was


def test_unmatched_series_and_unreadable_files_are_errors(wsi_factory, lossy, tmp_path):
    other_source = wsi_factory("validate-other", levels=1, label=False, thumbnail=False, seed=99)
    folder = tmp_path / "recoded"
    shutil.copytree(lossy, folder)
    (folder / "broken.dcm").write_bytes(b"not a dicom file at all")
    report_dir = tmp_path / "report"
    code = main(
        ["validate", str(other_source), str(folder), "-o", str(report_dir), "--sample", "2",
         "--metrics", "psnr", "--no-dciodvfy"]
    )  # fmt: skip
    assert code == 1
    data = json.loads((report_dir / "report.json").read_text())
    assert any("broken.dcm" in e for e in data["errors"])
    series_errors = [e for s in data["series"] for e in s["errors"]]
    assert any("no matching source series" in e for e in series_errors)
    assert (report_dir / "report.html").is_file() and (report_dir / "series.csv").is_file()


def test_report_aggregates_runs_with_rate_distortion_plots(source, lossy, tmp_path):
    better = _recode(source, tmp_path / "q90", "jpeg", 90)
    reports = []
    for name, folder in (("r60", lossy), ("r90", better)):
        out = tmp_path / name
        assert main(["validate", str(source), str(folder), "-o", str(out), "--sample", "4",
                     "--metrics", "psnr,ms-ssim", "--no-dciodvfy"]) == 0  # fmt: skip
        reports.append(out)
    merged = tmp_path / "merged"
    assert main(["report", *map(str, reports), str(better), "-o", str(merged)]) == 0
    with (merged / "series.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # two validations; the bare run record of `better` is the series r90 validated: counted once
    assert len(rows) == 2
    assert {r["quality"] for r in rows} == {"60", "90"}
    html = (merged / "report.html").read_text()
    assert "alt='rate-distortion psnr'" in html and "alt='rate-distortion ms-ssim'" in html
    with (merged / "tiles.csv").open() as handle:
        assert {r["run"] for r in csv.DictReader(handle)} == {str(lossy), str(better)}


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium (Debian `chromium`) absent")
def test_html_report_renders_offline_with_its_images(source, lossy, tmp_path):
    report_dir = tmp_path / "report"
    assert main(["validate", str(source), str(lossy), "-o", str(report_dir), "--sample", "4",
                 "--metrics", "psnr,ssim", "--no-dciodvfy"]) == 0  # fmt: skip
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(report_dir / "report.html", alone / "report.html")  # no images folder beside it
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1200,2600", (alone / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.is_file(), done.stderr[-2000:]
    import imagecodecs

    pixels = imagecodecs.imread(str(shot))[:, :, :3].astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    pink = (red > 120) & (red - green > 40) & (blue - green > 10)  # H&E tissue in the images
    assert pink.mean() > 0.02, pink.mean()
    dom = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         (alone / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip
    assert dom.count("<img") >= 3 + 3
    assert 'src="data:image/png;base64,' in dom and 'src="images/' not in dom
