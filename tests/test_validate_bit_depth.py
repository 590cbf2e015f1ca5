"""validate on 16-bit monochrome slides whose signal uses little of its range (values 0..24 in
16 bits, like highdicom's sm_image_grayscale.dcm): loss is measured at the native depth, never
on an 8-bit copy that would make every frame "identical"."""

from __future__ import annotations

import math
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest

from tests.reader_builders import write_native, wsi_dataset
from wsitranscode.codecs.base import EncodeSettings, get_codec
from wsitranscode.dicom.frames import FrameReader
from wsitranscode.dicom.scan import scan
from wsitranscode.recode import RecodeOptions, recode
from wsitranscode.validate import RegionReader, ValidateOptions, validate

TILE, SIDE = 32, 64
OPTIONS = {"metrics": ("psnr", "ssim"), "run_dciodvfy": False, "workers": 2}


def _low_range_image() -> np.ndarray:
    """Smooth structure plus noise, values 0..24 (of 65535)."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    smooth = (np.sin(xx / 5) + np.cos(yy / 7) + 2) * 6
    noise = np.random.default_rng(0).integers(0, 2, (SIDE, SIDE))
    return (smooth + noise).astype(np.uint16)


@pytest.fixture(scope="module")
def gray16(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gray16") / "in"
    folder.mkdir()
    ds = wsi_dataset(
        rows=TILE, columns=TILE, total_columns=SIDE, total_rows=SIDE, samples=1, bits=16,
        photometric="MONOCHROME2",
    )  # fmt: skip
    image = _low_range_image()
    tiles = [
        np.ascontiguousarray(image[y : y + TILE, x : x + TILE])
        for y in range(0, SIDE, TILE)
        for x in range(0, SIDE, TILE)
    ]
    write_native(folder / "level0.dcm", ds, tiles)
    return folder


def _recode(source: Path, out: Path, codec: str, **settings: object) -> Path:
    options = RecodeOptions(codec=codec, settings=EncodeSettings(**settings), workers=2)
    assert not recode(source, out, options).failed
    return out


def _frames(path: Path, decode) -> list[np.ndarray]:
    with FrameReader(path) as reader:
        return [decode(reader.read_frame(i)) for i in range(reader.number_of_frames)]


def _source_frames(source: Path) -> list[np.ndarray]:
    ds = pydicom.dcmread(next(source.glob("*.dcm")))
    return list(ds.pixel_array)


def test_lossy_16_bit_loss_is_measured_at_the_native_depth(gray16, tmp_path):
    recoded = _recode(gray16, tmp_path / "jxl", "jxl", quality=85)
    report = validate(gray16, recoded, ValidateOptions(all_frames=True, **OPTIONS))
    (series,) = report.series
    # an independent decode: pydicom for the source, libjxl through imagecodecs for the output
    originals = _source_frames(gray16)
    decoded = _frames(next(recoded.rglob("*.dcm")), imagecodecs.jpegxl_decode)
    errors = [
        int(np.abs(a.astype(int) - b.reshape(a.shape).astype(int)).max())
        for a, b in zip(originals, decoded, strict=True)
    ]
    assert max(errors) > 0  # the recode really is lossy
    frames = sorted((t for t in report.tiles if t.kind == "frame"), key=lambda t: t.frame)
    for tile, a, b in zip(frames, originals, decoded, strict=True):
        mse = np.mean((a.astype(float) - b.reshape(a.shape).astype(float)) ** 2)
        expected = math.inf if mse == 0 else 10 * math.log10(65535**2 / mse)
        if math.isinf(expected):
            assert tile.values["psnr"] is None
        else:
            assert tile.values["psnr"] == pytest.approx(expected, abs=1e-3)
        assert tile.values["max-abs-error"] == int(np.abs(a.astype(int) - b.reshape(a.shape)).max())
    assert series.metrics["psnr"]["mean"] < 100  # not "identical" on every frame
    assert series.bits_stored == 16 and series.max_abs_error == max(errors)
    assert series.metrics["max-abs-error"]["worst"] == max(errors)
    assert series.eight_bit_copy == ["ssim"]
    assert any("8-bit RGB copy" in note and "16 bits" in note for note in series.notes)


def test_a_16_bit_lossless_target_off_by_one_is_not_pixel_exact(gray16, tmp_path):
    recoded = _recode(gray16, tmp_path / "j2k", "j2k", lossless=True)
    clean = validate(gray16, recoded, ValidateOptions(sample=0, **OPTIONS))
    assert clean.ok, clean.all_errors()
    assert clean.series[0].pixel_exact is True

    target = next(recoded.rglob("*.dcm"))
    codec = get_codec("j2k")
    frames = _frames(target, codec.decode)
    frames[2] = frames[2].copy()
    frames[2][5, 7] += 1  # one sample, one unit: invisible after a shift to 8 bits
    ds = pydicom.dcmread(target)
    settings = EncodeSettings(lossless=True)
    ds.PixelData = pydicom.encaps.encapsulate([codec.encode(f, settings) for f in frames])
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(target, enforce_file_format=True)

    report = validate(gray16, recoded, ValidateOptions(sample=0, **OPTIONS))
    (series,) = report.series
    assert not report.ok and series.pixel_exact is False
    (error,) = series.errors
    assert f"{target}, frame 2: lossless target is not pixel-exact" in error
    assert "maximum absolute error 1" in error
    assert series.max_abs_error == 1 and clean.series[0].max_abs_error == 0


def test_region_reader_gives_native_samples_and_an_8_bit_copy(gray16):
    (series,) = scan(gray16).series
    reader = RegionReader(series.levels()[0].instances)
    try:
        native = reader.native_region(20, 10, 30, 40)
        eight = reader.region(20, 10, 30, 40)
    finally:
        reader.close()
    image = _low_range_image()
    assert native.dtype == np.uint16 and native.shape == (40, 30, 1)
    np.testing.assert_array_equal(native[:, :, 0], image[10:50, 20:50])
    assert eight.dtype == np.uint8 and eight.shape == (40, 30, 3)
    assert not eight.any()  # 0..24 of 65535 is black in 8 bits
