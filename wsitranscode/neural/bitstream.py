"""The self-describing container every neural frame is stored in (no torch needed to read it).

Layout (big-endian), version 1:

    magic       4 bytes  b"WSNC"
    version     u8       1
    flags       u8       0 (reserved)
    model id    u8 length + UTF-8 (e.g. "compressai/bmshj2018-factorized/mse/q3", "he-small")
    weights     32 bytes SHA-256 of the model's weights (see wsitranscode.neural.modelfile)
    quality     u8       the model's quality index (CompressAI 1-8; 0 for single-rate models)
    height      u16      tile rows
    width       u16      tile columns
    pad rows    u16      rows added (replicated edge) to reach a multiple of the model's stride
    pad cols    u16      columns added
    latent h/w  u16, u16 the spatial shape the entropy decoder needs (y, or z for a hyperprior)
    groups      u8       number of entropy-coded strings (1: y; 2: y then z)
      length    u32      and the string's bytes, per group
    crc32       u32      over everything before it

The CRC catches damaged frames before the entropy decoder sees them (a range decoder turns any
bytes into some image, so corruption would otherwise pass unnoticed).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from wsitranscode.errors import DecodeError

MAGIC = b"WSNC"
VERSION = 1
_HEAD = struct.Struct(">4sBB")
_GEOMETRY = struct.Struct(">BHHHHHH")
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class NeuralFrame:
    model_id: str
    weights_sha256: str  # 64 hex digits
    quality: int
    height: int
    width: int
    pad_rows: int
    pad_cols: int
    latent_shape: tuple[int, int]
    strings: tuple[bytes, ...]

    @property
    def padded_shape(self) -> tuple[int, int]:
        return (self.height + self.pad_rows, self.width + self.pad_cols)


def pack(frame: NeuralFrame) -> bytes:
    model = frame.model_id.encode()
    if not 0 < len(model) < 256:
        raise ValueError(f"model id must be 1-255 bytes, got {frame.model_id!r}")
    digest = bytes.fromhex(frame.weights_sha256)
    if len(digest) != 32:
        raise ValueError("weights_sha256 must be 64 hex digits")
    parts = [
        _HEAD.pack(MAGIC, VERSION, 0),
        bytes([len(model)]),
        model,
        digest,
        _GEOMETRY.pack(
            frame.quality,
            frame.height,
            frame.width,
            frame.pad_rows,
            frame.pad_cols,
            *frame.latent_shape,
        ),
        bytes([len(frame.strings)]),
    ]
    for string in frame.strings:
        parts += [_LENGTH.pack(len(string)), string]
    body = b"".join(parts)
    return body + _LENGTH.pack(zlib.crc32(body))


def unpack(data: bytes | bytearray | memoryview) -> NeuralFrame:
    """Parse and check a container; DecodeError names what is wrong."""
    data = bytes(data)
    if len(data) < _HEAD.size + 4 or data[:4] != MAGIC:
        raise DecodeError("not a wsitranscode neural frame (no WSNC magic)")
    _, version, _flags = _HEAD.unpack_from(data)
    if version != VERSION:
        raise DecodeError(
            f"neural frame container version {version} is newer than this wsitranscode "
            f"reads ({VERSION}); upgrade wsitranscode"
        )
    if not _crc_ok(data) and data.endswith(b"\x00") and _crc_ok(data[:-1]):
        data = data[:-1]  # DICOM pads odd-length fragments with one zero byte
    if not _crc_ok(data):
        raise DecodeError("neural frame is damaged (CRC mismatch)")
    try:
        return _parse(data[:-4])
    except (struct.error, IndexError, UnicodeDecodeError) as err:
        raise DecodeError(f"neural frame is malformed: {err}") from err


def _crc_ok(data: bytes) -> bool:
    (crc,) = _LENGTH.unpack_from(data, len(data) - 4)
    return zlib.crc32(data[:-4]) == crc


def _parse(body: bytes) -> NeuralFrame:
    pos = _HEAD.size
    model_len = body[pos]
    pos += 1
    model_id = body[pos : pos + model_len].decode()
    pos += model_len
    digest = body[pos : pos + 32]
    if len(digest) != 32:
        raise IndexError("truncated weights hash")
    pos += 32
    quality, height, width, pad_rows, pad_cols, lat_h, lat_w = _GEOMETRY.unpack_from(body, pos)
    pos += _GEOMETRY.size
    count = body[pos]
    pos += 1
    strings = []
    for _ in range(count):
        (length,) = _LENGTH.unpack_from(body, pos)
        pos += _LENGTH.size
        if pos + length > len(body):
            raise IndexError("truncated entropy-coded string")
        strings.append(body[pos : pos + length])
        pos += length
    if pos != len(body):
        raise IndexError(f"{len(body) - pos} unexpected bytes after the last string")
    return NeuralFrame(
        model_id, digest.hex(), quality, height, width, pad_rows, pad_cols, (lat_h, lat_w),
        tuple(strings),
    )  # fmt: skip
