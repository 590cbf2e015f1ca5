"""Decoding one source frame to pixels: HxWxS numpy, RGB for colour, whatever the source syntax.

This is the hot path of a recode (every frame passes through it twice: source, then verification
of the new frame), so it avoids copies: native frames are views on the frame bytes (read-only)
unless a colour conversion or a planar reorder needs new memory, and codec outputs are returned
as they come. Callers must copy before modifying a returned array in place.

JPEG colour: a JPEG frame's codestream says what its three components are when it can, and that
wins over the DICOM label, as in libjpeg: an Adobe APP14 marker's transform flag (0: RGB,
otherwise YCbCr), then a JFIF APP0 marker (YCbCr), then component ids 'R','G','B' (RGB). Without
any of these, libjpeg would assume YCbCr; DICOM allows RGB JPEG frames without a colour transform
(PS3.5 8.2.1), so there the Photometric Interpretation decides (RGB: no transform).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsitranscode.dicom import syntaxes as ts
from wsitranscode.dicom.codestream import oversize_problem
from wsitranscode.errors import DecodeError, InvalidInputError, UnsupportedError

COLOUR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
MONOCHROME_PHOTOMETRICS = frozenset({"MONOCHROME2", "MONOCHROME1"})
_YBR = frozenset({"YBR_FULL", "YBR_FULL_422"})
# Rows x Columns of one frame: 16,384 x 16,384. Tiles are far smaller; a header asking for more
# would make every decoder allocate gigabytes per frame (docs/reliability.md).
MAX_FRAME_PIXELS = 1 << 28


@dataclass(frozen=True, slots=True)
class PixelInfo:
    """What is needed to decode a frame, taken from an instance's header."""

    transfer_syntax_uid: str
    rows: int
    columns: int
    samples_per_pixel: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    pixel_representation: int = 0
    planar_configuration: int = 0

    @classmethod
    def from_dataset(cls, ds: Any) -> PixelInfo:
        """Read the pixel description of a dataset (file meta needed for the transfer syntax).

        Raises InvalidInputError for missing attributes, UnsupportedError for pixels this tool
        does not handle (signed, not 8/16 bits allocated, an unknown transfer syntax).
        """
        path = getattr(ds, "filename", None) or None
        if not isinstance(path, str):
            path = None
        file_meta = getattr(ds, "file_meta", None)
        uid = getattr(file_meta, "TransferSyntaxUID", None) if file_meta is not None else None
        if not uid:
            raise InvalidInputError(
                "no Transfer Syntax UID in the file meta information", path=path
            )
        try:
            info = cls(
                transfer_syntax_uid=str(uid),
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                samples_per_pixel=int(ds.SamplesPerPixel),
                photometric=str(ds.PhotometricInterpretation).strip(),
                bits_allocated=int(ds.BitsAllocated),
                bits_stored=int(ds.get("BitsStored", ds.BitsAllocated)),
                pixel_representation=int(ds.get("PixelRepresentation", 0)),
                planar_configuration=int(ds.get("PlanarConfiguration", 0) or 0),
            )
        except AttributeError as err:
            raise InvalidInputError(f"missing pixel attribute: {err}", path=path) from err
        except (TypeError, ValueError) as err:
            raise InvalidInputError(f"invalid pixel attribute: {err}", path=path) from err
        problem = info.unsupported_reason()
        if problem:
            raise UnsupportedError(problem, path=path)
        return info

    def unsupported_reason(self) -> str | None:
        if self.transfer_syntax_uid not in _DECODERS:
            return f"cannot decode frames in {ts.name_of(self.transfer_syntax_uid)}"
        if self.rows < 1 or self.columns < 1:
            return f"invalid frame size {self.rows}x{self.columns}"
        if self.rows * self.columns > MAX_FRAME_PIXELS:
            return (
                f"frames of {self.columns}x{self.rows} pixels are larger than this tool "
                f"decodes ({MAX_FRAME_PIXELS:,} pixels a frame)"
            )
        if self.samples_per_pixel not in (1, 3):
            return f"{self.samples_per_pixel} samples per pixel (only 1 or 3 are supported)"
        if self.bits_allocated not in (8, 16):
            return f"Bits Allocated {self.bits_allocated} (only 8 or 16 are supported)"
        if not 1 <= self.bits_stored <= self.bits_allocated:
            return f"Bits Stored {self.bits_stored} with Bits Allocated {self.bits_allocated}"
        if self.pixel_representation != 0:
            return "signed pixels (Pixel Representation 1) are not supported"
        expected = COLOUR_PHOTOMETRICS if self.samples_per_pixel == 3 else MONOCHROME_PHOTOMETRICS
        if self.photometric not in expected:
            return (
                f"Photometric Interpretation {self.photometric} with "
                f"{self.samples_per_pixel} samples per pixel"
            )
        return None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.bits_allocated == 8 else np.dtype("<u2")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.rows, self.columns, self.samples_per_pixel)


def decode_frame(data: bytes, info: PixelInfo) -> np.ndarray:
    """Decode one frame's bytes to an HxWxS uint8/uint16 array (colour always RGB).

    Raises DecodeError when the bytes do not decode or decode to the wrong shape or type.
    """
    decoder = _DECODERS.get(info.transfer_syntax_uid)
    if decoder is None:
        raise DecodeError(f"cannot decode frames in {ts.name_of(info.transfer_syntax_uid)}")
    bomb = oversize_problem(data, info)
    if bomb:
        raise DecodeError(f"{ts.name_of(info.transfer_syntax_uid)} {bomb}")
    try:
        arr = decoder(data, info)
    except DecodeError:
        raise
    except Exception as err:  # codec libraries raise their own error classes
        name = ts.name_of(info.transfer_syntax_uid)
        raise DecodeError(f"{name} frame does not decode: {type(err).__name__}: {err}") from err
    return _checked(arr, info)


def _checked(arr: np.ndarray, info: PixelInfo) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    if arr.shape != info.shape:
        raise DecodeError(
            f"{ts.name_of(info.transfer_syntax_uid)} frame decoded to shape {arr.shape}, "
            f"expected {info.shape}"
        )
    if arr.dtype.itemsize != info.dtype.itemsize or arr.dtype.kind != "u":
        raise DecodeError(
            f"{ts.name_of(info.transfer_syntax_uid)} frame decoded to {arr.dtype}, "
            f"expected {info.dtype} for Bits Allocated {info.bits_allocated}"
        )
    return arr


# --- colour -----------------------------------------------------------------------------------


def ybr_full_to_rgb(arr: np.ndarray) -> np.ndarray:
    """Convert HxWx3 YBR_FULL (uint8 or uint16) to RGB of the same dtype.

    The inverse of the full-range JPEG/JFIF transform (PS3.3 C.7.6.3.1.2), per channel in
    float32 (about 3x faster than a 3x3 matrix product over pixels).
    """
    dtype = arr.dtype
    offset = np.float32(2 ** (8 * dtype.itemsize - 1))
    y = arr[..., 0].astype(np.float32)
    cb = arr[..., 1].astype(np.float32) - offset
    cr = arr[..., 2].astype(np.float32) - offset
    rgb = np.empty(arr.shape, dtype=np.float32)
    np.add(y, np.float32(1.402) * cr, out=rgb[..., 0])
    np.subtract(y, np.float32(0.344136) * cb + np.float32(0.714136) * cr, out=rgb[..., 1])
    np.add(y, np.float32(1.772) * cb, out=rgb[..., 2])
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, np.iinfo(dtype).max, out=rgb)
    return rgb.astype(dtype)


def _to_rgb_if_ybr(arr: np.ndarray, info: PixelInfo) -> np.ndarray:
    if info.samples_per_pixel == 3 and info.photometric in _YBR:
        return ybr_full_to_rgb(arr)
    return arr


# --- native -----------------------------------------------------------------------------------


def _decode_native(data: bytes, info: PixelInfo) -> np.ndarray:
    rows, cols, spp = info.shape
    if info.photometric == "YBR_FULL_422" and spp == 3:
        return _decode_native_ybr_422(data, info)
    expected = rows * cols * spp * info.dtype.itemsize
    _check_length(len(data), expected)
    flat = np.frombuffer(data, dtype=info.dtype, count=rows * cols * spp)
    if spp == 3 and info.planar_configuration == 1:
        arr = np.ascontiguousarray(flat.reshape(spp, rows, cols).transpose(1, 2, 0))
    else:
        arr = flat.reshape(rows, cols, spp)
    arr = _mask_unused_bits(arr, info)
    return _to_rgb_if_ybr(arr, info)


def _decode_native_ybr_422(data: bytes, info: PixelInfo) -> np.ndarray:
    # PS3.3 C.7.6.3.1.2: pairs of pixels stored as Y1 Y2 Cb Cr (chroma subsampled horizontally).
    rows, cols, _ = info.shape
    if cols % 2:
        raise DecodeError(f"native YBR_FULL_422 needs an even number of columns, not {cols}")
    expected = rows * cols * 2 * info.dtype.itemsize
    _check_length(len(data), expected)
    quads = np.frombuffer(data, dtype=info.dtype, count=rows * cols * 2).reshape(rows, cols // 2, 4)
    ybr = np.empty((rows, cols, 3), dtype=info.dtype)
    ybr[:, 0::2, 0] = quads[..., 0]
    ybr[:, 1::2, 0] = quads[..., 1]
    ybr[:, :, 1] = np.repeat(quads[..., 2], 2, axis=1)
    ybr[:, :, 2] = np.repeat(quads[..., 3], 2, axis=1)
    return ybr_full_to_rgb(_mask_unused_bits(ybr, info))


def _check_length(actual: int, expected: int) -> None:
    # One trailing byte is the padding of an odd-length single frame.
    if actual < expected or actual > expected + 1:
        raise DecodeError(f"native frame has {actual} bytes, expected {expected}")


def _mask_unused_bits(arr: np.ndarray, info: PixelInfo) -> np.ndarray:
    if info.bits_stored >= info.bits_allocated:
        return arr
    # Bits above Bits Stored may hold overlay or garbage (PS3.5 8.1.1): clear them.
    return arr & np.array((1 << info.bits_stored) - 1, dtype=arr.dtype)


# --- RLE --------------------------------------------------------------------------------------


def _decode_rle(data: bytes, info: PixelInfo) -> np.ndarray:
    import imagecodecs

    rows, cols, spp = info.shape
    nbytes = info.dtype.itemsize
    if len(data) < 64:
        raise DecodeError("RLE frame is shorter than its 64-byte header")
    header = np.frombuffer(data, dtype="<u4", count=16)
    segments = int(header[0])
    if segments != spp * nbytes:
        raise DecodeError(f"RLE frame has {segments} segments, expected {spp * nbytes}")
    offsets = [int(o) for o in header[1 : 1 + segments]] + [len(data)]
    if offsets != sorted(offsets) or offsets[0] < 64:
        raise DecodeError("RLE frame has invalid segment offsets")
    plane = rows * cols
    # Segments: for each sample, its bytes from most to least significant (PS3.5 G.2).
    out = np.empty((rows, cols, spp, nbytes), dtype=np.uint8)
    for index in range(segments):
        sample, byte = divmod(index, nbytes)
        decoded = imagecodecs.packbits_decode(data[offsets[index] : offsets[index + 1]])
        if len(decoded) < plane:
            raise DecodeError(f"RLE segment {index} decodes to {len(decoded)} bytes, not {plane}")
        out[:, :, sample, nbytes - 1 - byte] = np.frombuffer(decoded, np.uint8, plane).reshape(
            rows, cols
        )
    arr = out.view(info.dtype).reshape(rows, cols, spp)
    return _to_rgb_if_ybr(_mask_unused_bits(arr, info), info)


# --- JPEG -------------------------------------------------------------------------------------

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True, slots=True)
class JpegColourSignals:
    adobe_transform: int | None = None
    jfif: bool = False
    component_ids: tuple[int, ...] = ()


def jpeg_colour_signals(data: bytes) -> JpegColourSignals:
    """Read the APP0/APP14 markers and the frame header's component ids of a JPEG stream."""
    if not isinstance(data, bytes):
        data = bytes(data)
    adobe: int | None = None
    jfif = False
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        payload = data[pos + 4 : pos + 2 + length]
        if marker == 0xE0 and payload.startswith(b"JFIF\0"):
            jfif = True
        elif marker == 0xEE and payload.startswith(b"Adobe") and len(payload) >= 12:
            adobe = payload[11]
        elif marker in _SOF_MARKERS:
            count = payload[5] if len(payload) > 5 else 0
            ids = tuple(payload[6 + 3 * i] for i in range(count) if 6 + 3 * i < len(payload))
            return JpegColourSignals(adobe, jfif, ids)
        elif marker == 0xDA:  # start of scan before any frame header: malformed
            break
        pos += 2 + length
    return JpegColourSignals(adobe, jfif, ())


def jpeg_components_are_rgb(signals: JpegColourSignals, photometric: str) -> bool:
    """Whether a 3-component JPEG stores R, G, B (no colour transform); see the module notes."""
    if signals.adobe_transform is not None:
        return signals.adobe_transform == 0
    if signals.jfif:
        return False
    if signals.component_ids == (ord("R"), ord("G"), ord("B")):
        return True
    return photometric == "RGB"


def _decode_jpeg(data: bytes, info: PixelInfo) -> np.ndarray:
    import imagecodecs

    if info.samples_per_pixel == 1:
        return imagecodecs.jpeg8_decode(data)
    rgb = jpeg_components_are_rgb(jpeg_colour_signals(data), info.photometric)
    return imagecodecs.jpeg8_decode(data, colorspace="RGB" if rgb else "YCBCR", outcolorspace="RGB")


def _decode_jpeg_lossless(data: bytes, info: PixelInfo) -> np.ndarray:
    import imagecodecs

    # Lossless JPEG has no colour transform: components are what the photometric label says.
    if info.samples_per_pixel == 1:
        arr = imagecodecs.jpeg8_decode(data)
    else:
        arr = imagecodecs.jpeg8_decode(data, colorspace="RGB", outcolorspace="RGB")
    return _to_rgb_if_ybr(arr, info)


# --- JPEG-LS, JPEG 2000, HTJ2K, JPEG XL, WebP ---------------------------------------------------


def _decode_jpegls(data: bytes, info: PixelInfo) -> np.ndarray:
    import imagecodecs

    return _to_rgb_if_ybr(imagecodecs.jpegls_decode(data), info)


def _decode_j2k(data: bytes, info: PixelInfo) -> np.ndarray:
    import imagecodecs

    # OpenJPEG for HTJ2K too: OpenJPH's own decoder reconstructs lossy HT codestreams less
    # accurately (see FIELD-NOTES). The decoder undoes the codestream's MCT (RCT/ICT) and
    # upsamples subsampled YCC components to RGB itself, so YBR_RCT/YBR_ICT come out RGB;
    # YBR_FULL means full-size samples were converted to YCbCr before coding.
    arr = imagecodecs.jpeg2k_decode(data, numthreads=1)
    if info.samples_per_pixel == 3 and info.photometric == "YBR_FULL":
        return ybr_full_to_rgb(arr)
    return arr


def _decode_jpegxl(data: bytes, info: PixelInfo) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpegxl_decode(data, numthreads=1)


def _decode_webp(data: bytes, info: PixelInfo) -> np.ndarray:
    import imagecodecs

    return imagecodecs.webp_decode(data, hasalpha=False)


def _decode_neural(data: bytes, info: PixelInfo) -> np.ndarray:
    # torch is imported only here, when a neural frame is met (wsitranscode.neural.decoding).
    from wsitranscode.neural.decoding import decode_neural_frame

    return decode_neural_frame(data, info.rows, info.columns, info.samples_per_pixel)


_DECODERS: dict[str, Callable[[bytes, PixelInfo], np.ndarray]] = {
    ts.IMPLICIT_VR_LITTLE_ENDIAN: _decode_native,
    ts.EXPLICIT_VR_LITTLE_ENDIAN: _decode_native,
    ts.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: _decode_native,
    ts.RLE_LOSSLESS: _decode_rle,
    ts.JPEG_BASELINE: _decode_jpeg,
    ts.JPEG_EXTENDED: _decode_jpeg,
    ts.JPEG_LOSSLESS: _decode_jpeg_lossless,
    ts.JPEG_LOSSLESS_SV1: _decode_jpeg_lossless,
    ts.JPEG_LS_LOSSLESS: _decode_jpegls,
    ts.JPEG_LS_NEAR_LOSSLESS: _decode_jpegls,
    ts.JPEG_2000_LOSSLESS: _decode_j2k,
    ts.JPEG_2000: _decode_j2k,
    ts.HTJ2K_LOSSLESS: _decode_j2k,
    ts.HTJ2K_LOSSLESS_RPCL: _decode_j2k,
    ts.HTJ2K: _decode_j2k,
    ts.JPEG_XL_LOSSLESS: _decode_jpegxl,
    ts.JPEG_XL_JPEG_RECOMPRESSION: _decode_jpegxl,
    ts.JPEG_XL: _decode_jpegxl,
    ts.PRIVATE_WEBP: _decode_webp,
    **dict.fromkeys(ts.NEURAL_SYNTAXES, _decode_neural),
}

DECODABLE_SYNTAXES = frozenset(_DECODERS)
