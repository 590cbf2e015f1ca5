"""Every source syntax and layout recodes; real third-party files recode in every codec.

Pixels are compared frame by frame with the source decoded by pydicom's own decoders where it has
one, so a mistake shared by our reader and our decoder cannot hide. `dciodvfy` must find no error
in an output that its source did not already have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.dicom_checks import dciodvfy_errors, published_outputs, source_output_pairs
from wsitranscode.cli import main
from wsitranscode.dicom.decode import PixelInfo, decode_frame
from wsitranscode.dicom.frames import FrameReader

SOURCES = {
    "explicit": dict(transfer_syntax="1.2.840.10008.1.2.1"),
    "implicit": dict(transfer_syntax="1.2.840.10008.1.2"),
    "deflated": dict(transfer_syntax="1.2.840.10008.1.2.1.99"),
    "rle": dict(transfer_syntax="1.2.840.10008.1.2.5"),
    "jpeg-ybr422": dict(transfer_syntax="1.2.840.10008.1.2.4.50"),
    "jpeg-rgb": dict(transfer_syntax="1.2.840.10008.1.2.4.50", photometric="RGB"),
    "j2k-rct": dict(transfer_syntax="1.2.840.10008.1.2.4.90"),
    "j2k-ict": dict(transfer_syntax="1.2.840.10008.1.2.4.91"),
    "htj2k-lossless": dict(transfer_syntax="1.2.840.10008.1.2.4.201"),
    "htj2k": dict(transfer_syntax="1.2.840.10008.1.2.4.203"),
    "jpegls": dict(transfer_syntax="1.2.840.10008.1.2.4.80"),
    "jxl-lossless": dict(transfer_syntax="1.2.840.10008.1.2.4.110"),
    "jxl": dict(transfer_syntax="1.2.840.10008.1.2.4.112"),
    "sparse": dict(transfer_syntax="1.2.840.10008.1.2.4.50", dimension_organization="TILED_SPARSE"),
    "no-bot": dict(transfer_syntax="1.2.840.10008.1.2.4.50", bot=False),
    "eot": dict(transfer_syntax="1.2.840.10008.1.2.4.90", eot=True, bot=False),
    "fragmented": dict(transfer_syntax="1.2.840.10008.1.2.4.50", fragments_per_frame=3, bot=False),
    "concatenation": dict(transfer_syntax="1.2.840.10008.1.2.1", concatenation_frames=5),
    "monochrome16": dict(transfer_syntax="1.2.840.10008.1.2.1", monochrome=True),
}


def _decoded_frames(path: Path) -> list[np.ndarray]:
    with FrameReader(path) as reader:
        info = PixelInfo.from_dataset(reader.header)
        return [decode_frame(reader.read_frame(i), info) for i in range(reader.number_of_frames)]


def _pydicom_frames(path: Path) -> np.ndarray | None:
    """The source decoded by pydicom's own plugins, or None where pydicom has none for it."""
    ds = pydicom.dcmread(path)
    try:
        arr = ds.pixel_array
    except Exception:  # pydicom has no decoder for this syntax here
        return None
    if int(ds.get("NumberOfFrames", 1)) == 1:
        arr = arr[None]
    if arr.ndim == 3:
        arr = arr[..., None]
    return arr  # pydicom 3 converts YBR_FULL(_422) to RGB itself


LOSSY_SOURCE_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.4.112",
}


def _assert_matches_reference(ours: np.ndarray, reference: np.ndarray, syntax: str) -> None:
    assert ours.shape == reference.shape
    if syntax in LOSSY_SOURCE_SYNTAXES:
        # another decoder of a lossy codestream may round and upsample chroma differently
        diff = np.abs(ours.astype(np.int32) - reference.astype(np.int32))
        assert diff.mean() < 1.5, diff.mean()
    else:
        np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_layout_recodes_losslessly(wsi_factory, tmp_path, name):
    src = wsi_factory(f"src-{name}", levels=2, label=True, thumbnail=True, **SOURCES[name])
    out = tmp_path / "out"
    assert main(["recode", str(src), "-o", str(out), "--codec", "jxl", "--lossless"]) == 0
    pairs = source_output_pairs(src, out)
    assert len(published_outputs(out)) == len(pairs)
    for source, target in pairs:
        ours = _decoded_frames(source)
        reference = _pydicom_frames(source)
        if reference is not None:
            _assert_matches_reference(np.stack(ours), reference, SOURCES[name]["transfer_syntax"])
        for before, after in zip(ours, _decoded_frames(target), strict=True):
            np.testing.assert_array_equal(before, after)
        with FrameReader(source) as a, FrameReader(target) as b:
            assert a.tile_positions() == b.tile_positions()
        assert set(dciodvfy_errors(target)) <= set(dciodvfy_errors(source)), target


def test_rms_like_slide_recodes_and_opens_in_wsidicom(rms_like_slide, tmp_path):
    from wsidicom import WsiDicom

    out = tmp_path / "out"
    assert main(["recode", str(rms_like_slide), "-o", str(out), "--codec", "jxl", "--q", "85"]) == 0
    series_dir = next(p for p in out.iterdir() if p.is_dir())
    with WsiDicom.open(rms_like_slide) as before, WsiDicom.open(series_dir) as after:
        assert [lv.size.to_tuple() for lv in before.levels] == [
            lv.size.to_tuple() for lv in after.levels
        ]
        assert [lv.tile_size.to_tuple() for lv in before.levels] == [
            lv.tile_size.to_tuple() for lv in after.levels
        ]
    for path in published_outputs(out):
        assert dciodvfy_errors(path) == []


# Real files written by other producers, each recoded in every codec.
SHARED_FILES = [
    "ez-wsi/multiframe_camelyon_challenge_image.dcm",
    "highdicom/sm_image.dcm",
    "highdicom/sm_image_dots.dcm",
    "highdicom/sm_image_jpegls.dcm",
    "highdicom/sm_image_jpegls_nobot.dcm",
    "highdicom/sm_image_grayscale.dcm",
]
CODEC_ARGS = {
    "jpeg": ["--codec", "jpeg"],
    "jxl": ["--codec", "jxl"],
    "jxl-lossless": ["--codec", "jxl", "--lossless"],
    "jxl-recompress": ["--codec", "jxl-recompress"],
    "j2k": ["--codec", "j2k"],
    "j2k-lossless": ["--codec", "j2k", "--lossless"],
    "htj2k": ["--codec", "htj2k"],
    "htj2k-lossless": ["--codec", "htj2k", "--lossless"],
    "webp": ["--codec", "webp"],
}


def _expected_refusal(file: str, codec: str) -> bool:
    sixteen_bit = "grayscale" in file
    jpeg_source = "ez-wsi" in file
    if codec == "jxl-recompress":
        return not jpeg_source
    # jpeg and webp have no 16-bit mode. (OpenJPEG's irreversible path used to lose this file's
    # constant 16-bit 10x10 frames, errors of thousands; j2k now codes constant frames reversibly.)
    return sixteen_bit and codec in ("jpeg", "webp")


@pytest.mark.parametrize("codec", sorted(CODEC_ARGS))
@pytest.mark.parametrize("file", SHARED_FILES)
def test_real_third_party_files_in_every_codec(shared_data, tmp_path, file, codec, capsys):
    source = shared_data / "dicom" / file
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / source.name).write_bytes(source.read_bytes())
    out = tmp_path / "out"
    code = main(["recode", str(folder), "-o", str(out), "--workers", "2", *CODEC_ARGS[codec]])
    if _expected_refusal(file, codec):
        assert code == 1
        error = capsys.readouterr().err
        assert source.name in error and not published_outputs(out)
        return
    assert code == 0
    (target,) = published_outputs(out)
    if codec != "webp":
        assert set(dciodvfy_errors(target)) <= set(dciodvfy_errors(source))
    if codec == "jxl-recompress":  # byte-exact JPEG; JPEG decoders are not bit-exact
        from wsitranscode.codecs.base import get_codec

        restore = get_codec(codec).restore_source
        with FrameReader(source) as a, FrameReader(target) as b:
            for i in range(a.number_of_frames):
                assert restore(b.read_frame(i)) == a.read_frame(i)
        return
    for before, after in zip(_decoded_frames(source), _decoded_frames(target), strict=True):
        if "lossless" in codec:
            np.testing.assert_array_equal(before, after)
        else:
            assert before.shape == after.shape
