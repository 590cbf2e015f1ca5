"""Streaming writer for one encapsulated (compressed) DICOM instance.

Layout written, in order: 128-byte preamble, "DICM", file meta (group 2, explicit VR little
endian), the header data set (explicit VR little endian), Extended Offset Table (7FE0,0001) and
Extended Offset Table Lengths (7FE0,0002) zero-filled at 8 bytes per frame, Pixel Data
(7FE0,0010) OB of undefined length, an empty Basic Offset Table item, one item per frame, the
sequence delimiter. `commit` seeks back to patch both tables and the compression ratio
placeholder, then renames the temporary file onto the target path.

Why the Basic Offset Table is empty: PS3.3 C.7.6.3 allows the Extended Offset Table only when
the first item of Pixel Data has zero length (see docs/design.md, "Offset tables").
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import struct
import sys
from array import array
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NoReturn

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

from wsitranscode.errors import WsiTranscodeError

# A valid 16-character DS value, unlikely to occur anywhere else in a header. `derive_header`
# puts it where the compression ratio goes; `commit` overwrites it with the real ratio, padded
# with spaces to the same width (DS allows trailing spaces) so no length in the file changes.
RATIO_PLACEHOLDER = "9.99999999999e+9"
RATIO_WIDTH = len(RATIO_PLACEHOLDER)

_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0
_EOT_TAG = b"\xe0\x7f\x01\x00"  # (7FE0,0001)
_EOT_LENGTHS_TAG = b"\xe0\x7f\x02\x00"  # (7FE0,0002)
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_MAX_ITEM_LENGTH = 0xFFFFFFFE  # largest even 32-bit length
_FIRST_PIXEL_GROUP_TAG = 0x7FE00000
_WRITE_BUFFER = 1 << 20


def format_ratio(ratio: float) -> str:
    """The compression ratio as a DS value exactly RATIO_WIDTH characters wide."""
    if not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"compression ratio must be a positive finite number, got {ratio!r}")
    for digits in (6, 5, 4, 3, 2, 1):
        text = format(ratio, f".{digits}g")
        if len(text) <= RATIO_WIDTH:
            return text.ljust(RATIO_WIDTH)
    raise ValueError(f"compression ratio {ratio!r} cannot be written as a DS value")


def temporary_path_for(path: Path) -> Path:
    """Where the instance is written until commit: beside `path`, hidden, tied to this process."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def _ov_element_header(tag: bytes, length: int) -> bytes:
    # Explicit VR little endian, OV: tag, "OV", two reserved bytes, 32-bit length.
    return tag + b"OV\x00\x00" + struct.pack("<I", length)


def _serialize_file_meta(header: Dataset, path: Path) -> bytes:
    if not isinstance(getattr(header, "file_meta", None), FileMetaDataset):
        raise ValueError(f"header for {path} has no file meta information")
    meta = FileMetaDataset(header.file_meta)
    for required in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID"):
        if required not in meta:
            raise ValueError(f"header for {path} lacks file meta {required}")
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    buffer.write(b"\x00" * 128 + b"DICM")
    # Computes and writes (0002,0000) File Meta Information Group Length.
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


def _serialize_data_set(header: Dataset, number_of_frames: int) -> bytes:
    body = Dataset()
    for element in header:
        # Pixel data and what follows it (padding, signatures) are written by this class;
        # group lengths are retired and would be wrong after re-encoding.
        if element.tag >= _FIRST_PIXEL_GROUP_TAG or element.tag.element == 0:
            continue
        body.add(element)
    if "NumberOfFrames" in body and int(body.NumberOfFrames) != number_of_frames:
        raise ValueError(
            f"header says {body.NumberOfFrames} frames but the writer was told {number_of_frames}"
        )
    body.NumberOfFrames = number_of_frames
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, body)
    return buffer.getvalue()


def _find_all(haystack: bytes, needle: bytes) -> list[int]:
    positions = []
    start = haystack.find(needle)
    while start != -1:
        positions.append(start)
        start = haystack.find(needle, start + len(needle))
    return positions


class EncapsulatedWriter:
    """Writes one encapsulated multi-frame instance without holding its frames in memory.

    Use as a context manager: leaving the `with` block without `commit` (by an exception or
    otherwise) removes the temporary file, so `path` only ever holds a complete instance.
    """

    def __init__(self, path: Path | str, header: Dataset, number_of_frames: int):
        if number_of_frames < 1:
            raise ValueError("an encapsulated instance needs at least one frame")
        self.path = Path(path)
        self.temporary_path = temporary_path_for(self.path)
        self.number_of_frames = number_of_frames
        self._offsets = array("Q")
        self._lengths = array("Q")
        self._next_offset = 0  # from the first byte of the first frame's item tag
        self._finished = False
        self._ratio_positions: list[int] = []
        self._eot_value_position = 0
        self._file: BinaryIO | None = None
        meta = _serialize_file_meta(header, self.path)
        data_set = _serialize_data_set(header, number_of_frames)
        self._ratio_positions = [
            len(meta) + found for found in _find_all(data_set, RATIO_PLACEHOLDER.encode("ascii"))
        ]
        self._open_and_write_header(meta + data_set)

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> EncapsulatedWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._finished:
            self.abort()
            if exc_type is None:
                raise RuntimeError(
                    f"EncapsulatedWriter for {self.path} left without commit(); nothing written"
                )

    # -- public API -------------------------------------------------------------------------

    @property
    def frames_written(self) -> int:
        return len(self._offsets)

    @property
    def has_ratio_placeholder(self) -> bool:
        return bool(self._ratio_positions)

    def write_frame(self, data: bytes) -> None:
        """Append one frame as one fragment (padded to even length with a 0x00 byte)."""
        self._require_open()
        if not data:
            raise ValueError(f"frame {self.frames_written} for {self.path} is empty")
        if len(self._offsets) >= self.number_of_frames:
            self._fail(f"more frames than the {self.number_of_frames} announced")
        padded_length = len(data) + (len(data) & 1)
        if padded_length > _MAX_ITEM_LENGTH:
            self._fail(f"frame {self.frames_written} is larger than 4 GiB")
        self._write(_ITEM_TAG + struct.pack("<I", padded_length))
        self._write(data)
        if padded_length != len(data):
            self._write(b"\x00")
        self._offsets.append(self._next_offset)
        # PS3.3 C.7.6.3.1.8: the lengths are those of the items, hence even.
        self._lengths.append(padded_length)
        self._next_offset += 8 + padded_length

    def commit(self, compression_ratio: float | None = None) -> Path:
        """Finish the file and move it into place; returns `path`.

        `compression_ratio` replaces every RATIO_PLACEHOLDER in the header; it is required when
        the header holds one.
        """
        self._require_open()
        if self.frames_written != self.number_of_frames:
            self._fail(
                f"{self.frames_written} frames written but {self.number_of_frames} announced"
            )
        ratio_text = None
        if self._ratio_positions:
            if compression_ratio is None:
                self._fail("the header has a compression ratio placeholder but no ratio was given")
            try:
                ratio_text = format_ratio(compression_ratio).encode("ascii")
            except ValueError as error:
                self._fail(str(error))
        self._write(_SEQUENCE_DELIMITER)
        self._patch_offset_tables()
        if ratio_text is not None:
            for position in self._ratio_positions:
                self._write_at(position, ratio_text)
        self._flush_and_close()
        self._move_into_place()
        self._finished = True
        return self.path

    def abort(self) -> None:
        """Discard everything written; `path` is left untouched. Safe to call more than once."""
        self._finished = True
        if self._file is not None:
            # Closing flushes the buffer, which fails again on a full disk: ignore that.
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self.temporary_path.unlink(missing_ok=True)

    # -- internals --------------------------------------------------------------------------

    def _open_and_write_header(self, header_bytes: bytes) -> None:
        try:
            self._file = open(self.temporary_path, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115
        except OSError as error:
            raise self._user_error(error) from error
        table_bytes = 8 * self.number_of_frames
        self._eot_value_position = len(header_bytes) + 12
        zeros = bytes(table_bytes)
        self._write(header_bytes)
        self._write(_ov_element_header(_EOT_TAG, table_bytes) + zeros)
        self._write(_ov_element_header(_EOT_LENGTHS_TAG, table_bytes) + zeros)
        pixel_data_header = _PIXEL_DATA_TAG + b"OB\x00\x00" + struct.pack("<I", _UNDEFINED_LENGTH)
        empty_basic_offset_table = _ITEM_TAG + b"\x00\x00\x00\x00"
        self._write(pixel_data_header + empty_basic_offset_table)

    def _patch_offset_tables(self) -> None:
        offsets = self._offsets
        lengths = self._lengths
        if sys.byteorder == "big":  # the file is little endian whatever the machine
            offsets, lengths = array("Q", offsets), array("Q", lengths)
            offsets.byteswap()
            lengths.byteswap()
        table_bytes = 8 * self.number_of_frames
        self._write_at(self._eot_value_position, offsets.tobytes())
        self._write_at(self._eot_value_position + table_bytes + 12, lengths.tobytes())

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(data)
        except OSError as error:
            self._fail_with_os_error(error)

    def _write_at(self, position: int, data: bytes) -> None:
        assert self._file is not None
        try:
            self._file.seek(position)
            self._file.write(data)
        except OSError as error:
            self._fail_with_os_error(error)

    def _flush_and_close(self) -> None:
        assert self._file is not None
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as error:
            self._fail_with_os_error(error)
        self._file = None

    def _move_into_place(self) -> None:
        try:
            os.replace(self.temporary_path, self.path)
            self._fsync_directory()
        except OSError as error:
            self._fail_with_os_error(error)

    def _fsync_directory(self) -> None:
        # Makes the rename itself durable; not every platform can open a directory.
        try:
            descriptor = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)

    def _require_open(self) -> None:
        if self._finished or self._file is None:
            raise RuntimeError(f"EncapsulatedWriter for {self.path} is already closed")

    def _fail(self, message: str) -> NoReturn:
        self.abort()
        raise WsiTranscodeError(message, path=self.path)

    def _fail_with_os_error(self, error: OSError) -> NoReturn:
        self.abort()
        raise self._user_error(error) from error

    def _user_error(self, error: OSError) -> WsiTranscodeError:
        if error.errno == errno.ENOSPC:
            message = "no space left on device writing this file; free space and run again"
        elif error.errno == errno.EDQUOT:
            message = "disk quota exceeded writing this file"
        else:
            message = f"cannot write this file: {error.strerror or error}"
        return WsiTranscodeError(message, path=self.path)
