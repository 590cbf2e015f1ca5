"""Random access to the frames of one DICOM file without loading its Pixel Data.

`FrameReader(path)` reads the header once with pydicom (stopping before Pixel Data), finds the
Pixel Data element itself and builds a small index of where each frame's bytes lie:

- native (uncompressed) Pixel Data: frames at fixed offsets, nothing to index;
- encapsulated Pixel Data: the Extended Offset Table (7FE0,0001)/(7FE0,0002) when present (64-bit,
  so files over 4 GiB work), else a walk over the fragment item headers (payloads are skipped, not
  read) combined with the Basic Offset Table, or, with an empty Basic Offset Table, one fragment per
  frame, or fragments grouped into frames by their JPEG/JPEG-LS/JPEG 2000 end-of-codestream marker
  (FFD9), as pydicom's `generate_fragmented_frames` does;
- Deflated Explicit VR Little Endian: the dataset is inflated once into an anonymous temporary
  file (removed on close) and read as native from there.

Every offset is checked against the file size before it is used, so a damaged file gives an
`InvalidInputError` naming the file (and frame), never a crash or a huge allocation. Reads use
`os.pread`, so one reader can serve several threads at once.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
import zlib
from array import array
from pathlib import Path
from typing import IO, BinaryIO

from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import dcmread, read_dataset, read_file_meta_info

from wsitranscode.errors import InvalidInputError, UnsupportedError, WsiTranscodeError

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

NATIVE_SYNTAXES = {
    IMPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.1",
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
}

PIXEL_DATA_TAG = 0x7FE00010
FLOAT_PIXEL_DATA_TAGS = (0x7FE00008, 0x7FE00009)
ITEM_TAG = 0xFFFEE000
SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
_FUNCTIONAL_GROUP_TAGS = {0x52009229, 0x52009230}

# Explicit VRs whose element header has 2 reserved bytes and a 32-bit length.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_LONG_VRS |= {b"UV"}

# Codestreams that end with an FFD9 marker (JPEG EOI, JPEG-LS EOI, JPEG 2000 / HTJ2K EOC), so that
# several fragments of one frame can be grouped without an offset table.
_END_MARKER_SYNTAX_PREFIXES = ("1.2.840.10008.1.2.4.",)
_NO_END_MARKER_SYNTAXES = {
    "1.2.840.10008.1.2.4.100",  # MPEG2 and video syntaxes .100-.108
    "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103",
    "1.2.840.10008.1.2.4.104",
    "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106",
    "1.2.840.10008.1.2.4.107",
    "1.2.840.10008.1.2.4.108",
    "1.2.840.10008.1.2.4.110",  # JPEG XL: no end marker
    "1.2.840.10008.1.2.4.111",
    "1.2.840.10008.1.2.4.112",
}
_END_MARKER = b"\xff\xd9"
_END_MARKER_WINDOW = 10  # bytes at the end of a fragment searched for the marker, as pydicom does

_INFLATE_CHUNK = 1 << 20


def _unpack_uint64(value: bytes | None) -> tuple[int, ...]:
    data = bytes(value or b"")
    return struct.unpack(f"<{len(data) // 8}Q", data[: len(data) // 8 * 8])


def _convert_top_level_values(header: Dataset) -> None:
    """Make pydicom decode every top-level value now, so that a damaged value fails at open.

    The functional group sequences are left for `tile_positions` (they can be megabytes).
    """
    for element in list(header.elements()):
        if element.tag not in _FUNCTIONAL_GROUP_TAGS:
            header[element.tag]  # pydicom converts a raw element on access


def _describe(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _clipped(value: object, limit: int = 80) -> str:
    """repr of a header value for a message: a damaged length can make it megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _pixel_tag_name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class FrameReader:
    """Random access to the encoded frames of one DICOM file.

    Attributes:
        path: the file.
        header: the dataset without Pixel Data (file_meta included; the Extended Offset Table
            elements are included when present).
        transfer_syntax_uid: the file's transfer syntax.
        number_of_frames: NumberOfFrames (1 when absent).
        is_encapsulated: True for compressed (encapsulated) Pixel Data.
        frame_size: bytes per native frame (None for encapsulated data).

    Use as a context manager, or call `close()`. `read_frame` is safe to call from several
    threads at once.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._file: BinaryIO | None = None
        self._inflated: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._positions_cache: list[tuple[int, int]] | None = None
        # Encapsulated index: fragment value positions and lengths, and for each frame the index
        # of its first fragment (frame i = fragments _frame_starts[i] .. _frame_starts[i+1]-1).
        self._fragment_positions = array("q")
        self._fragment_lengths = array("q")
        self._frame_starts = array("q")
        self._eot_checked_lengths: array | None = None
        self.frame_size: int | None = None
        self._native_start = 0
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 (kept open for the reader's lifetime)
            self._open()
        except OSError as exc:
            self.close()
            raise InvalidInputError(f"cannot read: {exc.strerror or exc}", path=self.path) from exc
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public interface

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (and remove the inflated copy of a deflated file)."""
        for handle in (self._inflated, self._file):
            if handle is not None:
                handle.close()
        self._inflated = None
        self._file = None

    def read_frame(self, index: int) -> bytes:
        """The encoded bytes of frame `index` (0-based); fragments of one frame concatenated."""
        if not 0 <= index < self.number_of_frames:
            raise IndexError(
                f"{self.path}: frame {index} out of range (0..{self.number_of_frames - 1})"
            )
        if not self.is_encapsulated:
            assert self.frame_size is not None
            return self._read_exact(self._native_start + index * self.frame_size, self.frame_size)
        if self._eot_checked_lengths is not None:
            return self._read_eot_frame(index)
        first, end = self._frame_starts[index], self._frame_starts[index + 1]
        parts = [
            self._read_exact(self._fragment_positions[k], self._fragment_lengths[k], frame=index)
            for k in range(first, end)
        ]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def tile_positions(self) -> list[tuple[int, int]]:
        """The (column, row) of each frame's top-left pixel in the total pixel matrix, 0-based.

        TILED_FULL: computed, tiles row-major (column fastest, then row), then focal planes, then
        optical paths: frames beyond the first plane repeat the positions of the first plane. For a
        concatenation part, frame k of this file is frame ConcatenationFrameOffsetNumber + k of the
        whole. Otherwise (TILED_SPARSE or no DimensionOrganizationType): from
        PerFrameFunctionalGroupsSequence[i].PlanePositionSlideSequence[0] (1-based in DICOM),
        falling back to SharedFunctionalGroupsSequence for a single frame.
        """
        if self._positions_cache is None:
            try:
                if str(self.header.get("DimensionOrganizationType", "")).upper() == "TILED_FULL":
                    self._positions_cache = self._tiled_full_positions()
                else:
                    self._positions_cache = self._sparse_positions()
            except WsiTranscodeError:
                raise
            except Exception as exc:  # pydicom converts nested values lazily: damage shows here
                raise InvalidInputError(
                    f"unreadable functional groups ({_describe(exc)})", path=self.path
                ) from exc
        return list(self._positions_cache)

    # ------------------------------------------------------------------ opening

    def _open(self) -> None:
        assert self._file is not None
        self._file_size = os.fstat(self._file.fileno()).st_size
        meta_uid = self._meta_transfer_syntax()
        if meta_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            self.header, pixel_element_pos = self._read_deflated_header()
        else:
            self.header, pixel_element_pos = self._read_header()
        self.transfer_syntax_uid = meta_uid
        if meta_uid == EXPLICIT_VR_BIG_ENDIAN:
            raise UnsupportedError(
                "Explicit VR Big Endian (retired) is not supported", path=self.path
            )
        self.number_of_frames = self._header_number_of_frames()
        implicit = meta_uid == IMPLICIT_VR_LITTLE_ENDIAN
        value_pos, length = self._pixel_data_element(pixel_element_pos, implicit)
        self.is_encapsulated = length == UNDEFINED_LENGTH
        native_syntax = meta_uid in NATIVE_SYNTAXES
        if self.is_encapsulated == native_syntax:
            kind = "encapsulated" if self.is_encapsulated else "native (defined length)"
            raise InvalidInputError(
                f"Pixel Data is {kind}, which transfer syntax {meta_uid} does not allow",
                path=self.path,
            )
        if self.is_encapsulated:
            self._index_encapsulated(value_pos)
        else:
            self._index_native(value_pos, length)

    def _meta_transfer_syntax(self) -> str:
        try:
            meta = read_file_meta_info(self.path)
            _convert_top_level_values(meta)
        except InvalidDicomError as exc:
            raise InvalidInputError(f"not a readable DICOM file ({exc})", path=self.path) from exc
        except Exception as exc:  # pydicom raises many types on a damaged file meta
            raise InvalidInputError(
                f"unreadable DICOM file meta ({_describe(exc)})", path=self.path
            ) from exc
        uid = str(meta.get("TransferSyntaxUID", "")).strip()
        if not uid:
            raise InvalidInputError("no TransferSyntaxUID in the file meta", path=self.path)
        self._meta = meta
        return uid

    def _read_header(self) -> tuple[Dataset, int]:
        assert self._file is not None
        self._file.seek(0)
        try:
            header = dcmread(self._file, stop_before_pixels=True)
            _convert_top_level_values(header)
        except Exception as exc:  # pydicom raises many types on damaged headers
            raise InvalidInputError(
                f"unreadable DICOM header ({_describe(exc)})", path=self.path
            ) from exc
        # dcmread rewinds to the first byte of the Pixel Data element when it stops there.
        return header, self._file.tell()

    def _read_deflated_header(self) -> tuple[Dataset, int]:
        """Inflate the dataset into an anonymous temporary file and read the header from it."""
        assert self._file is not None
        group_length = self._meta.get("FileMetaInformationGroupLength")
        if group_length is None:
            raise InvalidInputError(
                "deflated file without FileMetaInformationGroupLength", path=self.path
            )
        # preamble (128) + "DICM" (4) + the group length element itself (12)
        dataset_start = 128 + 4 + 12 + int(group_length)
        self._inflated = tempfile.TemporaryFile(prefix="wsitranscode-inflated-")  # noqa: SIM115
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._file.seek(dataset_start)
        try:
            while chunk := self._file.read(_INFLATE_CHUNK):
                self._inflated.write(inflater.decompress(chunk))
                if inflater.eof:
                    break
            self._inflated.write(inflater.flush())
        except zlib.error as exc:
            raise InvalidInputError(f"deflated dataset is corrupt ({exc})", path=self.path) from exc
        if not inflater.eof:
            raise InvalidInputError("truncated: deflated dataset ends early", path=self.path)
        self._inflated.flush()
        self._file_size = self._inflated.tell()
        self._inflated.seek(0)
        try:
            header = read_dataset(
                self._inflated,
                is_implicit_VR=False,
                is_little_endian=True,
                stop_when=lambda tag, vr, length: (
                    tag == PIXEL_DATA_TAG or tag in FLOAT_PIXEL_DATA_TAGS
                ),
            )
            _convert_top_level_values(header)
        except Exception as exc:
            raise InvalidInputError(
                f"unreadable DICOM header ({_describe(exc)})", path=self.path
            ) from exc
        header.file_meta = self._meta
        return header, self._inflated.tell()

    def _header_number_of_frames(self) -> int:
        value = self.header.get("NumberOfFrames", 1)
        try:
            frames = int(value) if value not in (None, "") else 1
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"invalid NumberOfFrames {_clipped(value)}", path=self.path
            ) from exc
        if frames < 1:
            raise InvalidInputError(f"invalid NumberOfFrames {frames}", path=self.path)
        return frames

    def _pixel_data_element(self, pos: int, implicit: bool) -> tuple[int, int]:
        """(position of the value, value length) of the Pixel Data element starting at `pos`."""
        header = self._pread(12, pos)
        if len(header) < 8:
            raise InvalidInputError(
                f"no Pixel Data element: the dataset ends at byte {pos} (truncated?)",
                path=self.path,
            )
        group, element = struct.unpack("<HH", header[:4])
        tag = group << 16 | element
        if tag in FLOAT_PIXEL_DATA_TAGS:
            raise UnsupportedError(
                f"float Pixel Data {_pixel_tag_name(tag)} is not supported", path=self.path
            )
        if tag != PIXEL_DATA_TAG:
            raise InvalidInputError(
                f"expected Pixel Data at byte {pos}, found {_pixel_tag_name(tag)}", path=self.path
            )
        if implicit:
            return pos + 8, struct.unpack("<I", header[4:8])[0]
        vr = header[4:6]
        if vr in _LONG_VRS:
            if len(header) < 12:
                raise InvalidInputError("truncated: Pixel Data element header", path=self.path)
            return pos + 12, struct.unpack("<I", header[8:12])[0]
        return pos + 8, struct.unpack("<H", header[6:8])[0]

    # ------------------------------------------------------------------ native frames

    def _index_native(self, value_pos: int, length: int) -> None:
        rows, columns = self._header_int("Rows"), self._header_int("Columns")
        samples = self._header_int("SamplesPerPixel", 1)
        bits = self._header_int("BitsAllocated")
        if bits % 8:
            raise UnsupportedError(f"BitsAllocated {bits} is not supported", path=self.path)
        frame_size = rows * columns * samples * bits // 8
        if str(self.header.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
            frame_size = rows * columns * 2 * bits // 8  # chroma halved horizontally
        if frame_size <= 0:
            raise InvalidInputError("frames of zero size", path=self.path)
        expected = frame_size * self.number_of_frames
        found = min(length, self._file_size - value_pos)
        if found < expected:
            raise InvalidInputError(
                f"truncated: expected {expected} bytes of pixel data, found {found}",
                path=self.path,
            )
        self.frame_size = frame_size
        self._native_start = value_pos

    def _header_int(self, keyword: str, default: int | None = None) -> int:
        value = self.header.get(keyword, default)
        if value is None or value == "":
            raise InvalidInputError(f"missing {keyword}", path=self.path)
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"invalid {keyword} {_clipped(value)}", path=self.path) from exc

    # ------------------------------------------------------------------ encapsulated frames

    def _index_encapsulated(self, value_pos: int) -> None:
        bot_tag, bot_length = self._item_header(value_pos)
        if bot_tag != ITEM_TAG:
            raise InvalidInputError(
                f"encapsulated Pixel Data does not start with an item (found "
                f"{_pixel_tag_name(bot_tag)})",
                path=self.path,
            )
        first_fragment = value_pos + 8 + bot_length
        if bot_length % 4 or first_fragment > self._file_size:
            raise InvalidInputError(
                f"invalid Basic Offset Table length {bot_length}", path=self.path
            )
        if "ExtendedOffsetTable" in self.header:
            self._index_from_extended_offsets(first_fragment)
            return
        self._scan_fragments(first_fragment)
        if bot_length:
            raw = self._read_exact(value_pos + 8, bot_length)
            offsets = struct.unpack(f"<{bot_length // 4}I", raw)
            self._group_by_basic_offsets(offsets, first_fragment)
        else:
            self._group_without_offsets()

    def _item_header(self, pos: int) -> tuple[int, int]:
        data = self._pread(8, pos)
        if len(data) < 8:
            raise InvalidInputError(
                f"truncated: encapsulated Pixel Data ends at byte {self._file_size} without a "
                "sequence delimiter",
                path=self.path,
            )
        group, element, length = struct.unpack("<HHI", data)
        return group << 16 | element, length

    def _index_from_extended_offsets(self, first_fragment: int) -> None:
        offsets_raw = self.header.get("ExtendedOffsetTable")
        lengths_raw = self.header.get("ExtendedOffsetTableLengths")
        offsets = _unpack_uint64(offsets_raw)
        lengths = _unpack_uint64(lengths_raw)
        if len(offsets) != self.number_of_frames or len(lengths) != self.number_of_frames:
            raise InvalidInputError(
                f"Extended Offset Table has {len(offsets)} offsets and {len(lengths)} lengths for "
                f"{self.number_of_frames} frames",
                path=self.path,
            )
        positions = array("q")
        for frame, (offset, length) in enumerate(zip(offsets, lengths, strict=True)):
            item = first_fragment + offset
            if item + 8 + length > self._file_size:
                raise InvalidInputError(
                    f"Extended Offset Table points past the end of the file (offset {offset}, "
                    f"length {length}, file size {self._file_size})",
                    path=self.path,
                    frame=frame,
                )
            positions.append(item)
        self._fragment_positions = positions
        self._eot_checked_lengths = array("q", lengths)

    def _read_eot_frame(self, index: int) -> bytes:
        assert self._eot_checked_lengths is not None
        item, length = self._fragment_positions[index], self._eot_checked_lengths[index]
        data = self._read_exact(item, 8 + length, frame=index)
        group, element, item_length = struct.unpack("<HHI", data[:8])
        # The table's length is the item's length, or one less when it excludes the pad byte.
        if (group << 16 | element) != ITEM_TAG or item_length not in (length, length + 1):
            raise InvalidInputError(
                "Extended Offset Table does not point at this frame's item",
                path=self.path,
                frame=index,
            )
        return data[8:]

    def _scan_fragments(self, pos: int) -> None:
        """Record every fragment's value position and length, seeking past the payloads."""
        while True:
            tag, length = self._item_header(pos)
            if tag == SEQUENCE_DELIMITER_TAG:
                break
            if tag != ITEM_TAG or length == UNDEFINED_LENGTH:
                raise InvalidInputError(
                    f"invalid item {_pixel_tag_name(tag)} in encapsulated Pixel Data at byte {pos}",
                    path=self.path,
                )
            if pos + 8 + length > self._file_size:
                raise InvalidInputError(
                    f"truncated: fragment {len(self._fragment_positions)} at byte {pos} needs "
                    f"{length} bytes, the file ends at {self._file_size}",
                    path=self.path,
                )
            self._fragment_positions.append(pos + 8)
            self._fragment_lengths.append(length)
            pos += 8 + length
        if not self._fragment_positions:
            raise InvalidInputError("encapsulated Pixel Data has no fragments", path=self.path)

    def _group_by_basic_offsets(self, offsets: tuple[int, ...], first_fragment: int) -> None:
        if len(offsets) != self.number_of_frames:
            raise InvalidInputError(
                f"Basic Offset Table has {len(offsets)} entries for {self.number_of_frames} frames",
                path=self.path,
            )
        fragment_at = {
            position - 8 - first_fragment: k for k, position in enumerate(self._fragment_positions)
        }
        previous = -1
        for frame, offset in enumerate(offsets):
            k = fragment_at.get(offset)
            if k is None or k <= previous:
                raise InvalidInputError(
                    f"Basic Offset Table entry {offset} does not point at the start of a "
                    "fragment in order",
                    path=self.path,
                    frame=frame,
                )
            if frame == 0 and k != 0:
                raise InvalidInputError(
                    "Basic Offset Table does not start at the first fragment", path=self.path
                )
            self._frame_starts.append(k)
            previous = k
        self._frame_starts.append(len(self._fragment_positions))

    def _group_without_offsets(self) -> None:
        fragments, frames = len(self._fragment_positions), self.number_of_frames
        if fragments == frames:
            self._frame_starts = array("q", range(frames + 1))
        elif frames == 1:
            self._frame_starts = array("q", [0, fragments])
        elif fragments < frames:
            raise InvalidInputError(
                f"encapsulated Pixel Data has {fragments} fragments for {frames} frames",
                path=self.path,
            )
        else:
            self._group_by_end_markers()

    def _group_by_end_markers(self) -> None:
        uid = self.transfer_syntax_uid
        if not uid.startswith(_END_MARKER_SYNTAX_PREFIXES) or uid in _NO_END_MARKER_SYNTAXES:
            raise UnsupportedError(
                f"{len(self._fragment_positions)} fragments for {self.number_of_frames} frames "
                "and no offset table: frame boundaries cannot be found in this transfer syntax",
                path=self.path,
            )
        starts = array("q", [0])
        for k, (position, length) in enumerate(
            zip(self._fragment_positions, self._fragment_lengths, strict=True)
        ):
            window = min(length, _END_MARKER_WINDOW)
            if _END_MARKER in self._pread(window, position + length - window):
                starts.append(k + 1)
        if starts[-1] != len(self._fragment_positions):
            starts.append(len(self._fragment_positions))  # trailing fragments without a marker
        if len(starts) - 1 != self.number_of_frames:
            raise InvalidInputError(
                f"found {len(starts) - 1} frames by their end markers in "
                f"{len(self._fragment_positions)} fragments, expected {self.number_of_frames}",
                path=self.path,
            )
        self._frame_starts = starts

    # ------------------------------------------------------------------ tile positions

    def _tiled_full_positions(self) -> list[tuple[int, int]]:
        tile_rows, tile_columns = self._header_int("Rows"), self._header_int("Columns")
        total_columns = self._header_int("TotalPixelMatrixColumns")
        total_rows = self._header_int("TotalPixelMatrixRows")
        if min(tile_rows, tile_columns, total_columns, total_rows) <= 0:
            raise InvalidInputError("invalid tile or total pixel matrix size", path=self.path)
        across = -(-total_columns // tile_columns)
        down = -(-total_rows // tile_rows)
        per_plane = across * down
        offset = int(self.header.get("ConcatenationFrameOffsetNumber", 0) or 0)
        positions = []
        for frame in range(offset, offset + self.number_of_frames):
            tile = frame % per_plane
            positions.append(((tile % across) * tile_columns, (tile // across) * tile_rows))
        return positions

    def _sparse_positions(self) -> list[tuple[int, int]]:
        per_frame = self.header.get("PerFrameFunctionalGroupsSequence")
        if per_frame is None:
            shared = self.header.get("SharedFunctionalGroupsSequence")
            if self.number_of_frames == 1 and shared:
                return [self._plane_position(shared[0], 0)]
            if self.number_of_frames == 1:
                return [(0, 0)]
            raise InvalidInputError(
                "no tile positions: not TILED_FULL and no PerFrameFunctionalGroupsSequence",
                path=self.path,
            )
        if len(per_frame) != self.number_of_frames:
            raise InvalidInputError(
                f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for "
                f"{self.number_of_frames} frames",
                path=self.path,
            )
        return [self._plane_position(item, frame) for frame, item in enumerate(per_frame)]

    def _plane_position(self, item: Dataset, frame: int) -> tuple[int, int]:
        try:
            plane = item.PlanePositionSlideSequence[0]
            column = int(plane.ColumnPositionInTotalImagePixelMatrix)
            row = int(plane.RowPositionInTotalImagePixelMatrix)
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                "missing PlanePositionSlideSequence column/row position",
                path=self.path,
                frame=frame,
            ) from exc
        return column - 1, row - 1

    # ------------------------------------------------------------------ low-level reads

    def _fd(self) -> int:
        handle = self._inflated if self._inflated is not None else self._file
        if handle is None:
            raise ValueError(f"{self.path}: FrameReader is closed")
        return handle.fileno()

    def _pread(self, size: int, pos: int) -> bytes:
        fd = self._fd()
        if hasattr(os, "pread"):
            return os.pread(fd, size, pos)
        with self._lock:  # platforms without pread: seek and read under a lock
            os.lseek(fd, pos, os.SEEK_SET)
            return os.read(fd, size)

    def _read_exact(self, pos: int, size: int, frame: int | None = None) -> bytes:
        if pos < 0 or pos + size > self._file_size:
            raise InvalidInputError(
                f"truncated: {size} bytes at byte {pos} lie beyond the end of the file "
                f"({self._file_size} bytes)",
                path=self.path,
                frame=frame,
            )
        chunks = [b""]
        while size:
            chunk = self._pread(size, pos)
            if not chunk:
                raise InvalidInputError(
                    f"truncated: file ended at byte {pos}", path=self.path, frame=frame
                )
            chunks.append(chunk)
            pos += len(chunk)
            size -= len(chunk)
        return chunks[1] if len(chunks) == 2 else b"".join(chunks)
