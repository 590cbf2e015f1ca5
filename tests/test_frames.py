"""FrameReader: every way frames are stored, against pydicom's and highdicom's own readers."""

from __future__ import annotations

import hashlib
import os
import random
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.encaps import encapsulate, generate_fragmented_frames, generate_frames
from pydicom.pixels import iter_pixels
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from tests.reader_builders import (
    SHARED_DATA,
    item,
    jpeg_frames,
    random_tiles,
    sequence_delimiter,
    write_encapsulated,
    write_native,
    wsi_dataset,
)
from wsitranscode.dicom.frames import FrameReader
from wsitranscode.errors import InvalidInputError, UnsupportedError

SAMPLE_FILES = sorted((SHARED_DATA / "dicom").glob("*/*.dcm")) if SHARED_DATA.exists() else []


def _decode_with_pydicom(header: Dataset, frame: bytes, encapsulated: bool) -> np.ndarray:
    """Decode one frame's bytes with pydicom itself, through a one-frame copy of the header."""
    ds = Dataset()
    ds.update(header)
    ds.file_meta = header.file_meta
    ds.NumberOfFrames = 1
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        ds.pop(keyword, None)
    ds.PixelData = encapsulate([frame]) if encapsulated else frame
    return ds.pixel_array


# ---------------------------------------------------------------------- real sample files


@pytest.mark.shared_data
@pytest.mark.skipif(not SAMPLE_FILES, reason=f"sample data absent: {SHARED_DATA / 'dicom'}")
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_frames_match_pydicom(path: Path) -> None:
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    full = pydicom.dcmread(path)
    expected_pixels = list(iter_pixels(path))
    with FrameReader(path) as reader:
        assert "PixelData" not in reader.header
        assert reader.number_of_frames == int(full.NumberOfFrames) == len(expected_pixels)
        frames = [reader.read_frame(i) for i in range(reader.number_of_frames)]
        if reader.is_encapsulated:
            assert frames == list(generate_frames(full.PixelData, number_of_frames=len(frames)))
        for frame, expected in zip(frames, expected_pixels, strict=True):
            decoded = _decode_with_pydicom(reader.header, frame, reader.is_encapsulated)
            np.testing.assert_array_equal(decoded, expected)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # input untouched


@pytest.mark.shared_data
@pytest.mark.skipif(not SAMPLE_FILES, reason=f"sample data absent: {SHARED_DATA / 'dicom'}")
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_tile_positions_match_highdicom(path: Path) -> None:
    from highdicom.spatial import compute_tile_positions_per_frame

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    tiles = compute_tile_positions_per_frame(
        rows=ds.Rows,
        columns=ds.Columns,
        total_pixel_matrix_rows=ds.TotalPixelMatrixRows,
        total_pixel_matrix_columns=ds.TotalPixelMatrixColumns,
        total_pixel_matrix_image_position=(0.0, 0.0, 0.0),  # geometry does not affect offsets
        image_orientation=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0),
        pixel_spacing=(1.0, 1.0),
    )
    expected = [(int(column) - 1, int(row) - 1) for (column, row), _ in tiles]
    assert len(expected) == int(ds.NumberOfFrames)
    with FrameReader(path) as reader:
        assert reader.tile_positions() == expected


# ---------------------------------------------------------------------- native frames


def test_native_rgb_frames_are_the_tiles(tmp_path: Path) -> None:
    ds = wsi_dataset()
    tiles = random_tiles(ds)
    # An element after Pixel Data must not disturb the frame offsets.
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 16)
    path = write_native(tmp_path / "native.dcm", ds, tiles)
    with FrameReader(path) as reader:
        assert not reader.is_encapsulated
        assert reader.frame_size == 8 * 8 * 3
        assert [reader.read_frame(i) for i in range(6)] == [t.tobytes() for t in tiles]


def test_implicit_vr_16_bit_monochrome(tmp_path: Path) -> None:
    ds = wsi_dataset(syntax=ImplicitVRLittleEndian, samples=1, bits=16, photometric="MONOCHROME2")
    tiles = random_tiles(ds, seed=3)
    path = write_native(tmp_path / "implicit.dcm", ds, tiles)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    with FrameReader(path) as reader:
        for i, tile in enumerate(tiles):
            np.testing.assert_array_equal(
                np.frombuffer(reader.read_frame(i), "<u2").reshape(8, 8), tile
            )


def test_native_ybr_full_422_frames_are_subsampled_size(tmp_path: Path) -> None:
    ds = wsi_dataset(photometric="YBR_FULL_422", frames=2)
    data = os.urandom(8 * 8 * 2 * 2)
    ds.PixelData = data
    ds.save_as(tmp_path / "ybr.dcm", enforce_file_format=True)
    with FrameReader(tmp_path / "ybr.dcm") as reader:
        assert reader.frame_size == 128
        assert reader.read_frame(1) == data[128:]


def test_deflated_dataset_is_inflated_to_a_temporary_file(tmp_path: Path) -> None:
    ds = wsi_dataset(syntax=DeflatedExplicitVRLittleEndian)
    tiles = random_tiles(ds, seed=5)
    path = write_native(tmp_path / "deflated.dcm", ds, tiles)
    raw = path.read_bytes()
    assert tiles[0].tobytes() not in raw  # really deflated on disk
    with FrameReader(path) as reader:
        assert reader.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
        assert reader.header.TotalPixelMatrixColumns == 24
        assert [reader.read_frame(i) for i in range(6)] == [t.tobytes() for t in tiles]
        inflated = reader._inflated
        assert inflated is not None
    assert inflated.closed


def test_truncated_native_file_is_reported(tmp_path: Path) -> None:
    ds = wsi_dataset()
    path = write_native(tmp_path / "cut.dcm", ds, random_tiles(ds))
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 50)
    with pytest.raises(InvalidInputError, match=r"truncated: expected 1152 bytes .* found 1102"):
        FrameReader(path)


def test_truncated_deflated_file_is_reported(tmp_path: Path) -> None:
    ds = wsi_dataset(syntax=DeflatedExplicitVRLittleEndian)
    path = write_native(tmp_path / "deflated.dcm", ds, random_tiles(ds))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(InvalidInputError, match="truncated") as err:
        FrameReader(path)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------------- encapsulated frames


@pytest.mark.parametrize(
    ("bot", "fragments", "extended"),
    [(True, 1, False), (False, 1, False), (True, 3, False), (False, 3, False), (False, 1, True)],
    ids=["bot", "no-bot", "bot-3-fragments", "markers-3-fragments", "extended-offset-table"],
)
def test_encapsulated_frames_round_trip(
    tmp_path: Path, bot: bool, fragments: int, extended: bool
) -> None:
    ds = wsi_dataset()
    frames = jpeg_frames(6)
    path = write_encapsulated(
        tmp_path / "enc.dcm", ds, frames, bot=bot, fragments_per_frame=fragments, extended=extended
    )
    with FrameReader(path) as reader:
        assert reader.is_encapsulated
        for i, frame in enumerate(frames):
            got = reader.read_frame(i)
            assert got[: len(frame)] == frame and len(got) - len(frame) in (0, 1)  # even padding
        assert reader.tile_positions()[:4] == [(0, 0), (8, 0), (16, 0), (0, 8)]


def test_decoded_encapsulated_frame_matches_pydicom(tmp_path: Path) -> None:
    ds = wsi_dataset()
    path = write_encapsulated(tmp_path / "enc.dcm", ds, jpeg_frames(6), bot=False, extended=True)
    expected = list(iter_pixels(path))
    with FrameReader(path) as reader:
        for i in (0, 5):
            decoded = _decode_with_pydicom(reader.header, reader.read_frame(i), True)
            np.testing.assert_array_equal(decoded, expected[i])


def test_single_frame_in_several_fragments(tmp_path: Path) -> None:
    ds = wsi_dataset(total_columns=8, total_rows=8)
    frames = jpeg_frames(1, seed=9)
    path = write_encapsulated(tmp_path / "one.dcm", ds, frames, bot=False, fragments_per_frame=4)
    with FrameReader(path) as reader:
        assert reader.read_frame(0).rstrip(b"\0") == frames[0].rstrip(b"\0")


def test_fragments_without_end_markers_need_an_offset_table(tmp_path: Path) -> None:
    ds = wsi_dataset(syntax=RLELossless)  # RLE segments have no end-of-frame marker
    path = write_encapsulated(
        tmp_path / "rle.dcm",
        ds,
        [os.urandom(40) for _ in range(6)],
        bot=False,
        fragments_per_frame=2,
    )
    with pytest.raises(UnsupportedError, match="12 fragments for 6 frames"):
        FrameReader(path)


def test_elements_after_encapsulated_pixel_data_are_ignored(tmp_path: Path) -> None:
    ds = wsi_dataset()
    frames = jpeg_frames(6)
    ds.add_new(0xFFFCFFFC, "OB", b"\xfe\xff\x00\xe0" * 4)  # looks like items, after the delimiter
    path = write_encapsulated(tmp_path / "trail.dcm", ds, frames, bot=False)
    with FrameReader(path) as reader:
        assert reader.read_frame(5).rstrip(b"\0") == frames[5].rstrip(b"\0")


def _write_raw_encapsulated(path: Path, ds: Dataset, pixel_value: bytes) -> Path:
    """Write ds, then append a Pixel Data element with exactly these encapsulated bytes."""
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path, enforce_file_format=True)
    with open(path, "ab") as f:
        f.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" + pixel_value)
    return path


def test_basic_offset_table_pointing_outside_is_reported(tmp_path: Path) -> None:
    ds = wsi_dataset(total_columns=16, total_rows=8)
    frames = jpeg_frames(2)
    bot = struct.pack("<2I", 0, 0x7FFFFFF0)
    value = item(bot) + item(frames[0]) + item(frames[1]) + sequence_delimiter()
    path = _write_raw_encapsulated(tmp_path / "bad-bot.dcm", ds, value)
    with pytest.raises(InvalidInputError, match=r"frame 1: Basic Offset Table entry"):
        FrameReader(path)


def test_extended_offset_table_pointing_outside_is_reported(tmp_path: Path) -> None:
    ds = wsi_dataset(total_columns=16, total_rows=8)
    frames = jpeg_frames(2)
    ds.ExtendedOffsetTable = struct.pack("<2Q", 0, 2**40)
    ds.ExtendedOffsetTableLengths = struct.pack("<2Q", len(frames[0]), len(frames[1]))
    value = item(b"") + item(frames[0]) + item(frames[1]) + sequence_delimiter()
    path = _write_raw_encapsulated(tmp_path / "bad-eot.dcm", ds, value)
    with pytest.raises(InvalidInputError, match=r"frame 1: Extended Offset Table points past"):
        FrameReader(path)


def test_extended_offset_table_not_at_an_item_is_reported(tmp_path: Path) -> None:
    ds = wsi_dataset(total_columns=16, total_rows=8)
    frames = [b"A" * 10, b"B" * 10]
    ds.ExtendedOffsetTable = struct.pack("<2Q", 0, 4)  # second offset inside the first item
    ds.ExtendedOffsetTableLengths = struct.pack("<2Q", 10, 10)
    value = item(b"") + item(frames[0]) + item(frames[1]) + sequence_delimiter()
    path = _write_raw_encapsulated(tmp_path / "bad-eot.dcm", ds, value)
    with FrameReader(path) as reader:
        assert reader.read_frame(0) == b"A" * 10
        with pytest.raises(InvalidInputError, match="frame 1: Extended Offset Table does not"):
            reader.read_frame(1)


def test_truncated_encapsulated_file_is_reported(tmp_path: Path) -> None:
    ds = wsi_dataset()
    path = write_encapsulated(tmp_path / "cut.dcm", ds, jpeg_frames(6), bot=True)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 30)
    with pytest.raises(InvalidInputError, match="truncated") as err:
        FrameReader(path)
    assert str(err.value).startswith(str(path))


def test_fewer_fragments_than_frames_is_reported(tmp_path: Path) -> None:
    ds = wsi_dataset()  # 6 frames
    path = write_encapsulated(tmp_path / "few.dcm", ds, jpeg_frames(6)[:4], bot=False)
    with pytest.raises(InvalidInputError, match="4 fragments for 6 frames"):
        FrameReader(path)


def _supports_sparse_files(folder: Path) -> bool:
    probe = folder / "sparse-probe"
    with open(probe, "wb") as f:
        f.truncate(2**30)
    sparse = probe.stat().st_blocks * 512 < 2**20
    probe.unlink()
    return sparse


def test_extended_offsets_beyond_4_gib(tmp_path: Path) -> None:
    """Frames past 4 GiB in a sparse file: the 64-bit Extended Offset Table must be honoured.

    Two large zero-filled padding fragments (holes on disk) push the frames past 4 GiB; the
    Extended Offset Table points straight at the frames (not a conformant file: one fragment per
    frame is required, but it is what exercises 64-bit offsets without writing 5 GB).
    """
    if not _supports_sparse_files(tmp_path):
        pytest.skip("the temporary folder's filesystem does not support sparse files")
    ds = wsi_dataset(total_columns=16, total_rows=8)
    frames = jpeg_frames(2)
    frames = [f + b"\0" * (len(f) % 2) for f in frames]
    padding = [3 * 2**30, 2 * 2**30]
    first_frame_offset = sum(8 + p for p in padding)
    offsets = [first_frame_offset, first_frame_offset + 8 + len(frames[0])]
    assert offsets[0] > 2**32
    ds.ExtendedOffsetTable = struct.pack("<2Q", *offsets)
    ds.ExtendedOffsetTableLengths = struct.pack("<2Q", *map(len, frames))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    path = tmp_path / "huge.dcm"
    ds.save_as(path, enforce_file_format=True)
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" + item(b""))
        for size in padding:
            f.write(b"\xfe\xff\x00\xe0" + size.to_bytes(4, "little"))
            f.seek(size, os.SEEK_CUR)  # a hole: nothing written
        f.write(item(frames[0]) + item(frames[1]) + sequence_delimiter())
    assert path.stat().st_size > 5 * 2**30
    assert path.stat().st_blocks * 512 < 2**24
    with FrameReader(path) as reader:
        assert reader.read_frame(0) == frames[0]
        assert reader.read_frame(1) == frames[1]


# ---------------------------------------------------------------------- tile positions


def test_tiled_sparse_positions_come_from_per_frame_groups(tmp_path: Path) -> None:
    ds = wsi_dataset(organization="TILED_SPARSE", frames=3, total_columns=40, total_rows=40)
    expected = [(16, 8), (0, 0), (32, 24)]
    groups = []
    for column, row in expected:
        plane = Dataset()
        plane.ColumnPositionInTotalImagePixelMatrix = column + 1
        plane.RowPositionInTotalImagePixelMatrix = row + 1
        group = Dataset()
        group.PlanePositionSlideSequence = [plane]
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = groups
    path = write_native(tmp_path / "sparse.dcm", ds, random_tiles(ds))
    with FrameReader(path) as reader:
        assert reader.tile_positions() == expected


def test_tiled_sparse_without_positions_is_reported(tmp_path: Path) -> None:
    ds = wsi_dataset(organization="TILED_SPARSE", frames=2)
    path = write_native(tmp_path / "sparse.dcm", ds, random_tiles(ds))
    with FrameReader(path) as reader, pytest.raises(InvalidInputError, match="no tile positions"):
        reader.tile_positions()


def test_tiled_full_focal_planes_repeat_positions(tmp_path: Path) -> None:
    ds = wsi_dataset(total_columns=20, total_rows=8)  # 3 tiles across (last one partial), 1 down
    ds.TotalPixelMatrixFocalPlanes = 2
    ds.NumberOfFrames = 6
    path = write_native(tmp_path / "planes.dcm", ds, random_tiles(ds))
    with FrameReader(path) as reader:
        assert reader.tile_positions() == [(0, 0), (8, 0), (16, 0)] * 2


def test_concatenation_part_positions_start_at_its_frame_offset(tmp_path: Path) -> None:
    ds = wsi_dataset(total_columns=24, total_rows=16, frames=4)  # 3x2 tiles, this part: 2..5
    ds.ConcatenationUID = pydicom.uid.generate_uid()
    ds.ConcatenationFrameOffsetNumber = 2
    ds.InConcatenationNumber = 2
    path = write_native(tmp_path / "part2.dcm", ds, random_tiles(ds))
    with FrameReader(path) as reader:
        assert reader.tile_positions() == [(16, 0), (0, 8), (8, 8), (16, 8)]


# ---------------------------------------------------------------------- other files, threads


def test_non_dicom_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n" * 20)
    with pytest.raises(InvalidInputError, match="not a readable DICOM file") as err:
        FrameReader(path)
    assert str(err.value).startswith(str(path))


def test_dicomdir_has_no_pixel_data(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.FileSetID = "TEST"
    ds.DirectoryRecordSequence = []
    path = tmp_path / "DICOMDIR"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InvalidInputError, match="no Pixel Data"):
        FrameReader(path)


def test_concurrent_reads_return_the_right_frames(tmp_path: Path) -> None:
    ds = wsi_dataset(total_columns=64, total_rows=64)  # 64 frames
    frames = jpeg_frames(64, seed=11)
    path = write_encapsulated(tmp_path / "many.dcm", ds, frames, bot=False, fragments_per_frame=2)
    order = list(range(64)) * 8
    random.Random(1).shuffle(order)
    with FrameReader(path) as reader, ThreadPoolExecutor(8) as pool:
        got = list(pool.map(reader.read_frame, order))
    for index, data in zip(order, got, strict=True):
        assert data.rstrip(b"\0") == frames[index].rstrip(b"\0")


def test_frame_index_out_of_range(tmp_path: Path) -> None:
    ds = wsi_dataset()
    path = write_native(tmp_path / "n.dcm", ds, random_tiles(ds))
    with FrameReader(path) as reader, pytest.raises(IndexError):
        reader.read_frame(6)


# ---------------------------------------------------------------------- synth fixtures


def _pydicom_frames(path: Path) -> list[bytes]:
    full = pydicom.dcmread(path)
    frames = int(full.NumberOfFrames)
    if full["PixelData"].is_undefined_length:
        extended = None
        if "ExtendedOffsetTable" in full:
            extended = (full.ExtendedOffsetTable, full.ExtendedOffsetTableLengths)
        return [
            b"".join(parts)
            for parts in generate_fragmented_frames(
                full.PixelData, number_of_frames=frames, extended_offsets=extended
            )
        ]
    size = len(full.PixelData) // frames
    return [full.PixelData[i * size : (i + 1) * size] for i in range(frames)]


def _synth_syntaxes() -> list[str]:
    from wsitranscode import synth

    return list(synth.WRITABLE_SYNTAXES)


@pytest.mark.parametrize("syntax", _synth_syntaxes())
def test_every_synth_syntax_reads_like_pydicom(tmp_path: Path, syntax: str) -> None:
    from wsitranscode import synth
    from wsitranscode.dicom.syntaxes import register_with_pydicom

    register_with_pydicom()  # pydicom must know JPEG XL / HTJ2K to write and read them
    image = synth.synthetic_tissue(64, 96, seed=1)
    files = synth.build_wsi(
        image,
        tmp_path,
        transfer_syntax=syntax,
        tile_size=32,
        levels=2,
        label=False,
        thumbnail=False,
    )
    for path in files:
        with FrameReader(path) as reader:
            assert reader.transfer_syntax_uid == syntax
            got = [reader.read_frame(i) for i in range(reader.number_of_frames)]
        assert got == _pydicom_frames(path)


@pytest.mark.parametrize(("bot", "eot"), [(True, False), (False, False), (False, True)])
def test_synth_sparse_concatenation_positions_match_tiled_full(
    tmp_path: Path, bot: bool, eot: bool
) -> None:
    from wsitranscode import synth

    image = synth.synthetic_tissue(48, 80, seed=2)
    common = {"tile_size": 16, "levels": 1, "label": False, "thumbnail": False}
    full = synth.build_wsi(image, tmp_path / "full", **common)
    parts = synth.build_wsi(
        image,
        tmp_path / "sparse",
        dimension_organization="TILED_SPARSE",
        concatenation_frames=4,
        transfer_syntax=synth.JPEG_BASELINE,
        bot=bot,
        eot=eot,
        fragments_per_frame=1 if eot else 3,
        **common,
    )
    with FrameReader(full[0]) as reader:
        expected = reader.tile_positions()
    assert len(expected) == 15
    sparse_positions = []
    for path in parts:
        with FrameReader(path) as reader:
            assert reader.header.DimensionOrganizationType == "TILED_SPARSE"
            sparse_positions += reader.tile_positions()
            assert [reader.read_frame(i) for i in range(reader.number_of_frames)] == (
                _pydicom_frames(path)
            )
    assert len(parts) == 4
    assert sparse_positions == expected
    full_parts = synth.build_wsi(image, tmp_path / "parts", concatenation_frames=4, **common)
    part_positions = []
    for path in full_parts:
        with FrameReader(path) as reader:
            part_positions += reader.tile_positions()
    assert part_positions == expected


# ---------------------------------------------------------------------- damaged files


def _damaged_copies(sources: list[bytes], count: int, seed: int) -> list[bytes]:
    """Deterministic truncations and byte flips (past the preamble) of the source files."""
    rng = random.Random(seed)
    copies = []
    for _ in range(count):
        data = bytearray(rng.choice(sources))
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(128, len(data))] = rng.randrange(256)
        copies.append(bytes(data))
    return copies


def test_damaged_files_raise_only_our_errors(tmp_path: Path) -> None:
    """Whatever the damage, FrameReader raises WsiTranscodeError (with the path) or works."""
    from wsitranscode.errors import WsiTranscodeError

    sources = []
    ds = wsi_dataset()
    sources.append(
        write_encapsulated(tmp_path / "a", ds, jpeg_frames(6), fragments_per_frame=2).read_bytes()
    )
    ds = wsi_dataset()
    sources.append(
        write_encapsulated(
            tmp_path / "b", ds, jpeg_frames(6), bot=False, extended=True
        ).read_bytes()
    )
    for syntax in (pydicom.uid.ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds = wsi_dataset(syntax=syntax)
        sources.append(write_native(tmp_path / "c", ds, random_tiles(ds)).read_bytes())
    path = tmp_path / "damaged.dcm"
    outcomes = set()
    for data in _damaged_copies(sources, 300, seed=7):
        path.write_bytes(data)
        try:
            with FrameReader(path) as reader:
                for i in range(reader.number_of_frames):
                    reader.read_frame(i)
                reader.tile_positions()
            outcomes.add("read")
        except WsiTranscodeError as err:
            assert err.path == path
            outcomes.add(type(err).__name__)
    assert {"read", "InvalidInputError"} <= outcomes


def test_damaged_header_value_is_reported_at_open(tmp_path: Path) -> None:
    ds = wsi_dataset()
    path = write_native(tmp_path / "bad-vr.dcm", ds, random_tiles(ds))
    data = path.read_bytes()
    rows = b"\x28\x00\x10\x00US\x02\x00"
    assert data.count(rows) == 1
    path.write_bytes(data.replace(rows, b"\x28\x00\x10\x00FD\x02\x00"))  # 2 bytes can't be FD
    with pytest.raises(InvalidInputError, match="unreadable DICOM header"):
        FrameReader(path)
