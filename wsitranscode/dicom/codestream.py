"""What a frame's codestream says about its own image, read from its first bytes, before decoding.

A decoder allocates what the codestream declares, not what the DICOM header says: a frame of a
few hundred bytes can declare a 65,000 x 65,000 image (a decompression bomb) and make the decoder
ask for gigabytes. `oversize_problem` compares the declared size with the header's Rows and
Columns and names the mismatch, so `decode_frame` refuses such a frame before any allocation.

Headers parsed: JPEG and JPEG-LS (SOFn), JPEG 2000 and HTJ2K (SIZ, raw codestream or JP2),
JPEG XL (SizeHeader, raw codestream or container), WebP (VP8, VP8L, VP8X). Anything else, or a
header that cannot be found in the first bytes, gives None and the decoder decides.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

HEADER_WINDOW = 1 << 16  # a header further in than this is not looked for
MAX_COMPONENTS = 4
MAX_J2K_TILES = 4096  # OpenJPEG allocates per-tile state for every declared tile up front

_JPEG_SOF = (frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}) | {0xF7}  # F7: JPEG-LS SOF55
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JXL_SIGNATURE = b"\xff\x0a"
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


@dataclass(frozen=True)
class Declared:
    """The image a codestream declares. `components` and `tiles` are 0 when not read."""

    rows: int
    columns: int
    components: int = 0
    tiles: int = 0


def declared_image(data: bytes, transfer_syntax_uid: str) -> Declared | None:
    """The size the codestream declares, or None when its format or header is not recognised."""
    head = bytes(data[:HEADER_WINDOW])
    try:
        if head[:2] == b"\xff\xd8":
            return _jpeg(head)
        if head[:4] == _J2K_SOC_SIZ or head[4:8] == b"jP  ":
            return _j2k(head)
        if head[:2] == _JXL_SIGNATURE or head[:12] == _JXL_CONTAINER:
            return _jpeg_xl(head)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp(head)
    except (IndexError, struct.error, ValueError):
        return None  # a header too short to read: the decoder reports the damage
    return None


def oversize_problem(data: bytes, info: Any) -> str | None:
    """A one-line reason when the codestream declares more than the header allows, else None.

    `info` is a `decode.PixelInfo` (rows, columns). Smaller declared sizes are left to the
    decoder's shape check: they cannot allocate more than the header promises.
    """
    declared = declared_image(data, info.transfer_syntax_uid)
    if declared is None:
        return None
    if declared.rows > info.rows or declared.columns > info.columns:
        return (
            f"codestream declares an image of shape ({declared.rows}, {declared.columns}), "
            f"larger than the frame shape ({info.rows}, {info.columns}) the header describes "
            "(refused before decoding)"
        )
    if declared.components > MAX_COMPONENTS:
        return f"codestream declares {declared.components} components (refused before decoding)"
    if declared.tiles > MAX_J2K_TILES:
        return (
            f"codestream declares {declared.tiles} tiles for one frame (more than "
            f"{MAX_J2K_TILES}; refused before decoding)"
        )
    return None


def _jpeg(head: bytes) -> Declared | None:
    pos = 2
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xDA:  # start of scan before a frame header
            return None
        length = int.from_bytes(head[pos + 2 : pos + 4], "big")
        if marker in _JPEG_SOF:
            rows, columns = struct.unpack(">HH", head[pos + 5 : pos + 9])
            return Declared(rows, columns, head[pos + 9])
        if length < 2:
            return None
        pos += 2 + length
    return None


def _j2k(head: bytes) -> Declared | None:
    start = head.find(_J2K_SOC_SIZ)
    if start < 0:
        return None
    siz = start + 2  # the SIZ marker
    (x_siz, y_siz, x_off, y_off, x_tile, y_tile, x_tile_off, y_tile_off) = struct.unpack(
        ">8I", head[siz + 6 : siz + 38]
    )
    (components,) = struct.unpack(">H", head[siz + 38 : siz + 40])
    if x_siz <= x_off or y_siz <= y_off or not x_tile or not y_tile:
        return None  # invalid: OpenJPEG refuses it without allocating
    across = -(-(x_siz - x_tile_off) // x_tile)
    down = -(-(y_siz - y_tile_off) // y_tile)
    return Declared(y_siz - y_off, x_siz - x_off, components, across * down)


def _jpeg_xl(head: bytes) -> Declared | None:
    codestream = head if head[:2] == _JXL_SIGNATURE else _jxl_codestream_in_container(head)
    if codestream is None:
        return None
    bits = _Bits(codestream[2:])
    small = bits.read(1)
    rows = (bits.read(5) + 1) * 8 if small else _jxl_size(bits)
    ratio = bits.read(3)
    if ratio:
        numerator, denominator = _JXL_RATIOS[ratio]
        columns = rows * numerator // denominator
    else:
        columns = (bits.read(5) + 1) * 8 if small else _jxl_size(bits)
    return Declared(rows, columns)


def _jxl_size(bits: _Bits) -> int:
    return bits.read((9, 13, 18, 30)[bits.read(2)]) + 1


def _jxl_codestream_in_container(head: bytes) -> bytes | None:
    pos = 0
    while pos + 8 <= len(head):
        size, kind = struct.unpack(">I4s", head[pos : pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", head[pos + 8 : pos + 16])[0], 16
        if kind == b"jxlc":
            return head[pos + header :]
        if kind == b"jxlp":  # partial codestream boxes start with a 4-byte index
            return head[pos + header + 4 :]
        if size < header:  # 0: the box runs to the end of the file
            return None
        pos += size
    return None


def _webp(head: bytes) -> Declared | None:
    kind = head[12:16]
    if kind == b"VP8X":
        columns = int.from_bytes(head[24:27], "little") + 1
        rows = int.from_bytes(head[27:30], "little") + 1
        return Declared(rows, columns)
    if kind == b"VP8L":
        if head[20] != 0x2F:
            return None
        value = int.from_bytes(head[21:25], "little")
        return Declared(((value >> 14) & 0x3FFF) + 1, (value & 0x3FFF) + 1)
    if kind == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            return None
        columns, rows = struct.unpack("<HH", head[26:30])
        return Declared(rows & 0x3FFF, columns & 0x3FFF)
    return None


class _Bits:
    """Reads little-endian bit fields, least significant bit first (JPEG XL's order)."""

    def __init__(self, data: bytes):
        self.value = int.from_bytes(data[:16], "little")
        self.available = 8 * min(len(data), 16)
        self.position = 0

    def read(self, count: int) -> int:
        if self.position + count > self.available:
            raise ValueError("JPEG XL header ends early")
        field = (self.value >> self.position) & ((1 << count) - 1)
        self.position += count
        return field
