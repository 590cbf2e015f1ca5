"""EncapsulatedWriter: layout, offset tables, placeholder patching, atomicity, failures."""

from __future__ import annotations

import builtins
import errno
import os
import resource
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames, parse_basic_offsets
from pydicom.uid import generate_uid

import wsitranscode.dicom.writer as writer_module
from tests.writer_builders import (
    JPEG_Q80,
    JPEG_XL_LOSSLESS,
    DerivedUIDs,
    frames_of,
    new_uids,
    tissue_like,
    valid_wsi_source,
    write_derived,
)
from wsitranscode.dicom.derive import derive_header
from wsitranscode.dicom.writer import (
    RATIO_PLACEHOLDER,
    EncapsulatedWriter,
    format_ratio,
    temporary_path_for,
)
from wsitranscode.errors import WsiTranscodeError


def lossy_header(frames: int = 6) -> pydicom.Dataset:
    source = valid_wsi_source(total_rows=32, total_columns=48)
    header, _ = derive_header(source, JPEG_Q80, new_uids(), software_version="0.1.0")
    assert int(header.NumberOfFrames) == frames
    return header


def lossless_header() -> pydicom.Dataset:
    source = valid_wsi_source(total_rows=32, total_columns=48)
    header, _ = derive_header(source, JPEG_XL_LOSSLESS, new_uids(), software_version="0.1.0")
    return header


def payloads(count: int, seed: int = 1) -> list[bytes]:
    """Arbitrary bytes with both odd and even lengths (the writer does not parse frames)."""
    rng = np.random.default_rng(seed)
    return [rng.bytes(int(rng.integers(1, 300)) | (i % 2)) for i in range(count)]


def write_all(
    path: Path,
    header: pydicom.Dataset,
    frames: list[bytes],
    ratio: float,
    announced: int | None = None,
) -> Path:
    with EncapsulatedWriter(path, header, announced or len(frames)) as writer:
        for data in frames:
            writer.write_frame(data)
        writer.commit(ratio)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------
# Layout and content


def test_frames_read_back_through_the_extended_offset_table(tmp_path: Path) -> None:
    frames = payloads(6)
    assert {len(f) % 2 for f in frames} == {0, 1}
    path = write_all(tmp_path / "out.dcm", lossy_header(), frames, 12.5)

    ds = pydicom.dcmread(path)
    offsets = struct.unpack("<6Q", ds.ExtendedOffsetTable)
    lengths = struct.unpack("<6Q", ds.ExtendedOffsetTableLengths)
    assert all(length % 2 == 0 for length in lengths)
    assert list(lengths) == [len(f) + len(f) % 2 for f in frames]
    assert offsets[0] == 0
    assert all(offsets[i + 1] == offsets[i] + 8 + lengths[i] for i in range(5))

    read = list(generate_frames(ds.PixelData, number_of_frames=6, extended_offsets=(
        ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)))  # fmt: skip
    for got, written in zip(read, frames, strict=True):
        assert got[: len(written)] == written
        assert got[len(written) :] in (b"", b"\x00")


def test_basic_offset_table_is_empty_and_pixel_data_is_undefined_length(tmp_path: Path) -> None:
    path = write_all(tmp_path / "out.dcm", lossy_header(), payloads(6), 3.0)
    ds = pydicom.dcmread(path)
    assert ds["PixelData"].is_undefined_length
    assert parse_basic_offsets(ds.PixelData) == []
    assert path.read_bytes().endswith(b"\xfe\xff\xdd\xe0\0\0\0\0")


def test_file_meta_is_explicit_little_endian_with_correct_group_length(tmp_path: Path) -> None:
    header = lossy_header()
    path = write_all(tmp_path / "out.dcm", header, payloads(6), 3.0)
    raw = path.read_bytes()
    assert raw[:128] == bytes(128) and raw[128:132] == b"DICM"
    assert raw[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    group_length = struct.unpack("<I", raw[140:144])[0]
    # The element right after group 2 starts a group other than 2.
    next_group = struct.unpack("<H", raw[144 + group_length : 146 + group_length])[0]
    assert next_group != 2
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEG_Q80.transfer_syntax_uid
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == header.SOPInstanceUID


def test_ratio_is_patched_in_every_placeholder(tmp_path: Path) -> None:
    header = lossy_header()
    assert str(header.LossyImageCompressionRatio).strip() == RATIO_PLACEHOLDER
    assert header.DerivationDescription.endswith(RATIO_PLACEHOLDER)
    path = write_all(tmp_path / "out.dcm", header, payloads(6), 17.25)
    assert RATIO_PLACEHOLDER.encode() not in path.read_bytes()
    ds = pydicom.dcmread(path)
    assert float(ds.LossyImageCompressionRatio) == 17.25
    assert ds.DerivationDescription.endswith("compression ratio 17.25")


def test_header_passed_in_is_not_modified(tmp_path: Path) -> None:
    header = lossy_header()
    before = pydicom.Dataset(header)
    write_all(tmp_path / "out.dcm", header, payloads(6), 2.0)
    assert header == before
    assert "ExtendedOffsetTable" not in header and "PixelData" not in header


def test_lossless_header_needs_no_ratio(tmp_path: Path) -> None:
    header = lossless_header()
    with EncapsulatedWriter(tmp_path / "out.dcm", header, 6) as writer:
        assert not writer.has_ratio_placeholder
        for data in payloads(6):
            writer.write_frame(data)
        writer.commit()
    assert "LossyImageCompressionRatio" not in pydicom.dcmread(tmp_path / "out.dcm")


@pytest.mark.parametrize("ratio", [1.0, 12.3456789, 0.5, 123456.789, 3.3e20])
def test_format_ratio_is_a_fixed_width_valid_ds(ratio: float) -> None:
    text = format_ratio(ratio)
    assert len(text) == len(RATIO_PLACEHOLDER)
    value = pydicom.valuerep.DSfloat(text.strip(), validation_mode=pydicom.config.RAISE)
    assert value == pytest.approx(ratio, rel=1e-5)


@pytest.mark.parametrize("ratio", [0.0, -1.0, float("nan"), float("inf")])
def test_commit_refuses_a_meaningless_ratio_and_leaves_nothing(
    tmp_path: Path, ratio: float
) -> None:
    with pytest.raises(WsiTranscodeError, match="ratio"):
        write_all(tmp_path / "out.dcm", lossy_header(), payloads(6), ratio)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Never a partial file at the target path


def test_exception_inside_with_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    with pytest.raises(KeyError), EncapsulatedWriter(out, lossy_header(), 6) as writer:
        writer.write_frame(b"abcd")
        assert temporary_path_for(out).exists()
        raise KeyError("worker died")
    assert leftovers(tmp_path) == []


def test_leaving_with_without_commit_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    with (
        pytest.raises(RuntimeError, match="without commit"),
        EncapsulatedWriter(out, lossy_header(), 6) as writer,
    ):
        writer.write_frame(b"abcd")
    assert leftovers(tmp_path) == []


def test_abort_keeps_an_existing_file_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    out.write_bytes(b"previous complete instance")
    with EncapsulatedWriter(out, lossy_header(), 6) as writer:
        writer.write_frame(b"abcd")
        writer.abort()
    assert out.read_bytes() == b"previous complete instance"
    assert leftovers(tmp_path) == ["out.dcm"]


def test_commit_replaces_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    out.write_bytes(b"old")
    write_all(out, lossy_header(), payloads(6), 4.0)
    assert pydicom.dcmread(out).NumberOfFrames == 6
    assert leftovers(tmp_path) == ["out.dcm"]


def test_too_few_frames_is_an_error_naming_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    with pytest.raises(WsiTranscodeError, match="5 frames written but 6 announced") as caught:
        write_all(out, lossy_header(), payloads(5), 2.0, announced=6)
    assert caught.value.path == out
    assert leftovers(tmp_path) == []


def test_too_many_frames_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    with pytest.raises(WsiTranscodeError, match="more frames than the 6 announced"):
        write_all(out, lossy_header(), payloads(7), 2.0, announced=6)
    assert leftovers(tmp_path) == []


def test_header_frame_count_must_match(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="6 frames"):
        EncapsulatedWriter(tmp_path / "out.dcm", lossy_header(), 5)
    assert leftovers(tmp_path) == []


def test_missing_output_folder_is_a_user_error(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "out.dcm"
    with pytest.raises(WsiTranscodeError, match="cannot write") as caught:
        EncapsulatedWriter(out, lossy_header(), 6)
    assert caught.value.path == out


class _DiskFillsUp:
    """A real file whose device runs out of space after `budget` bytes."""

    def __init__(self, real, budget: int):
        self._real = real
        self._left = budget

    def write(self, data: bytes) -> int:
        if len(data) > self._left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._real.write(data)

    def __getattr__(self, name: str):
        return getattr(self._real, name)


@pytest.mark.parametrize("where", ["header", "frames"])
def test_no_space_left_removes_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    frames = [bytes(999)] * 6
    complete_size = write_all(tmp_path / "probe.dcm", lossy_header(), frames, 2.0).stat().st_size
    (tmp_path / "probe.dcm").unlink()
    budget = 100 if where == "header" else complete_size - 3000

    def opener(*args, **kwargs):
        return _DiskFillsUp(builtins.open(*args, **kwargs), budget)

    monkeypatch.setattr(writer_module, "open", opener, raising=False)
    out = tmp_path / "out.dcm"
    with pytest.raises(WsiTranscodeError, match="no space left on device") as caught:
        write_all(out, lossy_header(), frames, 2.0)
    assert caught.value.path == out
    assert str(out) in str(caught.value)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Third-party readers and scale


def test_wsidicom_opens_a_written_two_level_series(tmp_path: Path) -> None:
    wsidicom = pytest.importorskip("wsidicom")
    image = tissue_like(64, 96, 3)
    half = image.reshape(32, 2, 48, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
    series, pyramid = generate_uid(), generate_uid()
    levels = [
        valid_wsi_source(
            total_rows=64, total_columns=96, image=image, series_uid=series, pyramid_uid=pyramid
        ),
        valid_wsi_source(
            total_rows=32,
            total_columns=48,
            image=half,
            series_uid=series,
            pyramid_uid=pyramid,
            pixel_spacing_mm=0.001,
        ),
    ]
    new_series, new_pyramid = generate_uid(), generate_uid()
    out = tmp_path / "series"
    out.mkdir()
    for index, source in enumerate(levels):
        uids = DerivedUIDs(new_series, generate_uid(), new_pyramid)
        write_derived(source, frames_of(source), JPEG_XL_LOSSLESS, out / f"{index}.dcm", uids)

    with wsidicom.WsiDicom.open(out) as slide:
        assert len(slide.levels) == 2
        level0 = np.asarray(slide.read_region((0, 0), 0, (96, 64)))[..., :3]
        level1 = np.asarray(slide.read_region((0, 0), 1, (48, 32)))[..., :3]
    np.testing.assert_array_equal(level0, image)
    np.testing.assert_array_equal(level1, half)


def test_highdicom_reads_a_written_jpeg_instance(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom")
    source = valid_wsi_source()
    frames = frames_of(source)
    path, _, _ = write_derived(source, frames, JPEG_Q80, tmp_path / "out.dcm")
    image = hd.imread(path)
    assert image.number_of_frames == len(frames)
    first = image.get_frame(1).astype(float)
    assert np.abs(first - frames[0]).mean() < 6  # JPEG q80 of smooth content


@pytest.mark.slow
def test_twenty_thousand_frames_stream_in_little_memory(tmp_path: Path) -> None:
    """Memory is O(frames) for the offsets only: 20,000 frames of 1 KB (20 MB of payload)."""
    frame_count = 20_000
    source = valid_wsi_source(total_rows=16, total_columns=16)
    source.NumberOfFrames = frame_count
    header, _ = derive_header(source, JPEG_Q80, new_uids(), software_version="0.1.0")
    payload = bytes(range(256)) * 4
    tracemalloc.start()
    started = time.perf_counter()
    write_all(tmp_path / "big.dcm", header, [payload] * frame_count, 10.0)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"\n20,000 x 1 KB frames: {seconds:.2f} s, traced peak {peak / 1e6:.2f} MB, "
        f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    assert peak < 5e6  # payload is 20 MB; tables and buffers are about 1.5 MB
    ds = pydicom.dcmread(tmp_path / "big.dcm", stop_before_pixels=True)
    offsets = struct.unpack(f"<{frame_count}Q", ds.ExtendedOffsetTable)
    assert offsets[-1] == (frame_count - 1) * (8 + len(payload))
