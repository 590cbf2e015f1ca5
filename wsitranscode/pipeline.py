"""The work on frames: read, decode, encode, verify. Runs wherever an executor puts it.

A `FrameBatch` names everything one batch needs by value (file path, frame range, codec name,
settings, pixel descriptions), so it pickles: the same function runs in a thread, in a local
process, or on a Dask worker that sees the same storage. Readers are cached per process.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsitranscode.codecs.base import Codec, EncodeSettings, TargetEncoding, get_codec
from wsitranscode.errors import DecodeError, VerificationError, WsiTranscodeError


@dataclass(frozen=True)
class FrameCheck:
    """How a decoded output frame compares with its decoded source frame."""

    mse: float
    exact: bool
    # Samples over 8 bits only, where PSNR at the full-range peak hides loss in low-range data
    # (a 16-bit channel using 0..24): the largest error and the brightest source sample.
    max_abs_error: int | None = None
    source_max: int | None = None


EXACT = FrameCheck(0.0, True)


@dataclass(frozen=True)
class FrameOutcome:
    index: int
    data: bytes
    source_bytes: int
    check: FrameCheck
    decode_s: float
    encode_s: float
    verify_s: float
    quality: int | None = None  # the quality chosen for this frame (--bpp-per-tile)


@dataclass(frozen=True)
class FrameBatch:
    """Frames [start, stop) of one source file, to be recoded with one codec and settings."""

    path: str
    start: int
    stop: int
    codec: str
    settings: EncodeSettings
    target: TargetEncoding
    source_info: Any  # decode.PixelInfo of the source
    target_info: Any  # decode.PixelInfo of the output (its syntax and photometric)
    min_psnr: float
    peak: float
    target_bpp: float | None = None  # --bpp-per-tile: choose each frame's quality for this bpp


def psnr_from_mse(mse: float, peak: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


_READERS: OrderedDict[tuple, Any] = OrderedDict()
_READERS_LOCK = threading.Lock()
# Comfortably above the files in use at once (one per series in flight, two per validated
# instance), so an evicted reader is never one a thread is still reading from.
_MAX_OPEN_READERS = 32


def open_reader(path: str) -> Any:
    """An open FrameReader for path, shared by the threads of this process. Keyed by the file's
    identity too, so a file replaced or rewritten since (a repaired input) is opened afresh."""
    from wsitranscode.dicom.frames import FrameReader

    stat = os.stat(path)
    key = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            reader = FrameReader(path)
            _READERS[key] = reader
            while len(_READERS) > _MAX_OPEN_READERS:
                _READERS.popitem(last=False)[1].close()
        _READERS.move_to_end(key)
        return reader


def process_batch(batch: FrameBatch) -> list[FrameOutcome]:
    """Recode and verify the frames of one batch; errors name the file and frame."""
    codec = get_codec(batch.codec)
    reader = open_reader(batch.path)
    if batch.target.compresses_source_bytes:
        return [_recompress(reader, codec, batch, i) for i in range(batch.start, batch.stop)]
    if hasattr(codec, "encode_batch"):
        return _encode_batched(reader, codec, batch)
    return [_encode_one(reader, codec, batch, i) for i in range(batch.start, batch.stop)]


def _named(err: Exception, batch: FrameBatch, index: int) -> WsiTranscodeError:
    if isinstance(err, WsiTranscodeError):
        return type(err)(err.message, path=batch.path, frame=index)
    # a codec library error: name the frame, keep the cause's text
    return DecodeError(f"{type(err).__name__}: {err}", path=batch.path, frame=index)


def _recompress(reader: Any, codec: Codec, batch: FrameBatch, index: int) -> FrameOutcome:
    try:
        source = reader.read_frame(index)
        t0 = time.perf_counter()
        data = codec.recompress(source, batch.settings)
        t1 = time.perf_counter()
        if codec.restore_source(data) != source:
            raise VerificationError("recompressed frame does not restore the source bytes exactly")
    except Exception as err:
        raise _named(err, batch, index) from err
    return FrameOutcome(index, data, len(source), EXACT, 0.0, t1 - t0, time.perf_counter() - t1)


def _encode_one(reader: Any, codec: Codec, batch: FrameBatch, index: int) -> FrameOutcome:
    from wsitranscode.dicom.decode import decode_frame

    try:
        source = reader.read_frame(index)
        t0 = time.perf_counter()
        tile = decode_frame(source, batch.source_info)
        t1 = time.perf_counter()
        data, quality = _encode_for_batch(codec, tile, batch)
        t2 = time.perf_counter()
        check = compare(tile, decode_frame(data, batch.target_info), batch)
    except Exception as err:
        raise _named(err, batch, index) from err
    verify_s = time.perf_counter() - t2
    return FrameOutcome(index, data, len(source), check, t1 - t0, t2 - t1, verify_s, quality)


def _encode_for_batch(
    codec: Codec, tile: np.ndarray, batch: FrameBatch
) -> tuple[bytes, int | None]:
    """Encode with the batch's settings, or with --bpp-per-tile at the quality chosen for this
    tile (the search already encoded it at that quality: those bytes are reused)."""
    if batch.target_bpp is None:
        return codec.encode(tile, batch.settings), None
    from dataclasses import replace

    from wsitranscode.ratecontrol import choose_quality_per_tile

    choice = choose_quality_per_tile(codec, tile, batch.target_bpp, batch.settings)
    if choice.encoded is not None:
        return choice.encoded, choice.quality
    return codec.encode(tile, replace(batch.settings, quality=choice.quality)), choice.quality


def _encode_batched(reader: Any, codec: Any, batch: FrameBatch) -> list[FrameOutcome]:
    """Codecs with encode_batch (neural ones) see the whole batch at once."""
    from wsitranscode.dicom.decode import decode_frame

    indices = range(batch.start, batch.stop)
    sources, tiles = [], []
    t0 = time.perf_counter()
    for index in indices:
        try:
            sources.append(reader.read_frame(index))
            tiles.append(decode_frame(sources[-1], batch.source_info))
        except Exception as err:
            raise _named(err, batch, index) from err
    t1 = time.perf_counter()
    try:
        encoded = codec.encode_batch(tiles, batch.settings)
        t2 = time.perf_counter()
        decoded = codec.decode_batch(encoded) if hasattr(codec, "decode_batch") else None
    except Exception as err:
        raise _named(err, batch, batch.start) from err
    outcomes = []
    for n, index in enumerate(indices):
        try:
            back = (
                decoded[n] if decoded is not None else decode_frame(encoded[n], batch.target_info)
            )
            check = compare(tiles[n], back, batch)
        except Exception as err:
            raise _named(err, batch, index) from err
        share = 1 / len(indices)
        outcomes.append(
            FrameOutcome(
                index,
                encoded[n],
                len(sources[n]),
                check,
                (t1 - t0) * share,
                (t2 - t1) * share,
                (time.perf_counter() - t2) * share,
            )
        )
    return outcomes


def compare(tile: np.ndarray, back: np.ndarray, batch: FrameBatch) -> FrameCheck:
    """Verify a decoded output frame against its decoded source frame."""
    if back.shape != tile.shape:
        raise VerificationError(f"decoded shape {back.shape} differs from source {tile.shape}")
    if not batch.target.lossy:
        if not np.array_equal(tile, back):
            raise VerificationError("lossless target is not pixel-exact")
        return FrameCheck(0.0, True, *_high_bit_extremes(tile, None, batch))
    diff = tile.astype(np.float32).ravel()
    diff -= back.ravel()
    mse = float(np.dot(diff, diff)) / diff.size  # BLAS: fast, and releases the GIL
    psnr = psnr_from_mse(mse, batch.peak)
    if psnr < batch.min_psnr:
        raise VerificationError(
            f"PSNR {psnr:.1f} dB is below the verification floor of {batch.min_psnr} dB "
            "(a decoding or colour error, or content this codec loses at this quality, such as "
            "text: raise --q, or lower --min-psnr if that loss is intended)"
        )
    return FrameCheck(mse, mse == 0.0, *_high_bit_extremes(tile, diff, batch))


def _high_bit_extremes(
    tile: np.ndarray, diff: np.ndarray | None, batch: FrameBatch
) -> tuple[int | None, int | None]:
    """(largest absolute error, brightest source sample) for samples over 8 bits, else Nones:
    measured only there, to keep the common 8-bit path at its speed."""
    if batch.peak <= 255:
        return None, None
    error = 0 if diff is None or diff.size == 0 else int(max(diff.max(), -diff.min()))
    return error, int(tile.max()) if tile.size else 0
