"""The image codecs on imagecodecs: jpeg, jxl, jxl-recompress, j2k, htj2k, webp.

Quality (`EncodeSettings.quality`, 0-100, higher is better) means the same thing for every lossy
codec here: about the fidelity libjpeg reaches at that quality on H&E tissue, so that sizes at one
q compare at roughly equal quality. Measured on 24 real tissue tiles of 256x256 (libjpeg-turbo,
4:2:2, mean PSNR): q10 28.0 dB, q30 32.3, q50 33.8, q70 35.2, q80 36.3, q85 37.1, q90 38.3,
q95 40.3, q100 44.1 (`_Q_TO_PSNR`). Per codec:

- jpeg: libjpeg quality = q (the reference), 4:2:2 chroma subsampling, optimised Huffman tables.
- jxl: libjxl's own quality-to-distance mapping, the one `cjxl -q` uses (its Butteraugli distance
  is roughly libjpeg-quality-equivalent by design): d = 0.1 + (100 - q) * 0.09 for q >= 30,
  else 6.24 + 2.5 ** ((30 - q) / 5) / 6.25. q85 -> d 1.45, q90 -> d 1.0 ("visually lossless").
  Effort: default 5 for lossy, 7 for lossless, chosen from the effort curve measured on 40
  tissue tiles of the real TCGA slide (benchmarks/recode_throughput.py, docs/benchmarks.md):
  lossy at q85, effort 5 gives 1.918 bpp / 35.20 dB in 14 ms a tile and effort 7 gives
  1.921 bpp / 35.13 dB in 25 ms, so 7 buys nothing; 1-4 are 10-15% larger, 8-9 are 5% smaller
  at 6-9x the time. Lossless, effort 7 is 3% smaller than 5 (9.76 vs 10.05 bpp) for 1.7x the
  time, worth it for an archive kept bit-exact. `--effort` overrides both.
- j2k (OpenJPEG): a PSNR target per frame (`level` in dB, one quality layer) of `_Q_TO_PSNR[q]`;
  irreversible 9/7 wavelet with the ICT (YBR_ICT) when lossy, reversible 5/3 with the RCT
  (YBR_RCT) when lossless. J2K codestreams (no JP2 box), as DICOM requires.
- htj2k (OpenJPH): imagecodecs' `level` is OpenJPH's base quantisation step (0 < step <= 1,
  values above 1 are clamped to 1, which is why level=80 gives a 186-byte frame: the coarsest
  step). The step for q is interpolated (log scale) from a table measured so that the PSNR
  matches `_Q_TO_PSNR[q]` on tissue (`_Q_TO_HTJ2K_STEP`). Colour transform: ICT when lossy, RCT
  when lossless, so the label is YBR_ICT / YBR_RCT.
- webp: libwebp quality = q (close to libjpeg's scale on tissue: q85 36.5 dB vs 37.1). Effort
  is libwebp's `method` (0 fast .. 6 slow), default 4 as in libwebp/cwebp; lossless uses
  cwebp's default level 75. Lossless method 4 takes ~100 ms per 256x256 tile, method 0 ~6 ms
  for ~20% more bytes.

Every encode is single-threaded (numthreads=1) so that results are identical whatever the thread
and the recode pool parallelises across tiles instead.
"""

from __future__ import annotations

import math

import numpy as np

from wsitranscode.codecs.base import Codec, EncodeSettings, TargetEncoding, register
from wsitranscode.dicom import syntaxes as ts
from wsitranscode.errors import DecodeError, UsageError

# q -> PSNR (dB) that libjpeg-turbo reaches at that quality on H&E tissue (see module notes).
_Q_TO_PSNR = (
    (0, 22.9),
    (10, 28.0),
    (20, 31.0),
    (30, 32.3),
    (40, 33.1),
    (50, 33.8),
    (60, 34.4),
    (70, 35.2),
    (80, 36.3),
    (85, 37.1),
    (90, 38.3),
    (95, 40.3),
    (100, 44.1),
)

# OpenJPH quantisation step -> mean PSNR (dB) on the same tissue tiles (decoded with OpenJPEG).
_HTJ2K_STEP_TO_PSNR = (
    (0.3, 27.79),
    (0.2, 29.18),
    (0.15, 30.25),
    (0.1, 31.85),
    (0.07, 33.4),
    (0.05, 35.01),
    (0.032, 37.35),
    (0.024, 38.98),
    (0.016, 41.4),
    (0.012, 43.28),
    (0.008, 46.12),
)

JXL_DEFAULT_EFFORT = 5  # lossy; see the module notes
JXL_DEFAULT_LOSSLESS_EFFORT = 7
WEBP_DEFAULT_METHOD = 4  # libwebp's default speed/size trade-off (0 fast .. 6 slow)
# Note: `--effort` means JPEG XL effort (1-9) for jxl and libwebp method (0-6) for webp; the
# JPEG, JPEG 2000 and HTJ2K encoders here have no effort setting and ignore it.


def _is_constant(image: np.ndarray) -> bool:
    return image.size > 0 and bool(image.min() == image.max())


def quality_to_psnr(quality: int) -> float:
    """The PSNR (dB) libjpeg reaches at `quality` on tissue: the common meaning of q here."""
    qs, dbs = zip(*_Q_TO_PSNR, strict=True)
    return float(np.interp(_clamped_quality(quality), qs, dbs))


def quality_to_jxl_distance(quality: int) -> float:
    """libjxl's JxlEncoderDistanceFromQuality (the mapping `cjxl -q` uses)."""
    q = _clamped_quality(quality)
    if q >= 30:
        return 0.1 + (100 - q) * 0.09
    return 6.24 + 2.5 ** ((30 - q) / 5) / 6.25


def quality_to_htj2k_step(quality: int) -> float:
    """OpenJPH quantisation step that gives about `quality_to_psnr(quality)` on tissue."""
    target = quality_to_psnr(quality)
    dbs = [db for _, db in _HTJ2K_STEP_TO_PSNR]
    log_steps = [math.log(step) for step, _ in _HTJ2K_STEP_TO_PSNR]
    return float(math.exp(np.interp(target, dbs, log_steps)))


def _clamped_quality(quality: int) -> int:
    return max(0, min(100, int(quality)))


def _image(tile: np.ndarray) -> np.ndarray:
    """A contiguous HxW (monochrome) or HxWx3 array, as imagecodecs expects."""
    if tile.ndim == 3 and tile.shape[2] == 1:
        tile = tile[:, :, 0]
    return np.ascontiguousarray(tile)


def _bits(tile: np.ndarray) -> int:
    return tile.dtype.itemsize * 8


def _decode_error(codec: str, err: Exception) -> DecodeError:
    return DecodeError(f"{codec} frame does not decode: {type(err).__name__}: {err}")


class _ImageCodec(Codec):
    """The codecs of this module read no codec options (EncodeSettings.extra)."""

    option_keys: frozenset[str] | None = frozenset()


class JpegCodec(_ImageCodec):
    name = "jpeg"
    summary = "JPEG baseline (ISO 10918-1), 4:2:2, YBR_FULL_422: readable everywhere"

    def target(self, settings: EncodeSettings) -> TargetEncoding:
        if settings.lossless:
            raise UsageError(
                "jpeg cannot be lossless; use jxl, j2k or htj2k with --lossless "
                "(or jxl-recompress to shrink existing JPEG frames losslessly)"
            )
        return TargetEncoding(
            codec=self.name,
            transfer_syntax_uid=ts.JPEG_BASELINE,
            photometric="YBR_FULL_422",
            lossy=True,
            lossy_method="ISO_10918_1",
            description=f"JPEG baseline q{settings.quality} 4:2:2",
        )

    def unsupported_pixels(self, samples_per_pixel: int, bits_stored: int) -> str | None:
        if bits_stored > 8:
            return (
                f"JPEG baseline holds 8-bit samples only, not {bits_stored}-bit; "
                "use jxl, j2k or htj2k"
            )
        return None

    def encode(self, tile: np.ndarray, settings: EncodeSettings) -> bytes:
        import imagecodecs

        image = _image(tile)
        if image.dtype != np.uint8:
            raise UsageError(f"jpeg needs 8-bit samples, got {image.dtype}")
        subsampling = "422" if image.ndim == 3 else None
        return bytes(
            imagecodecs.jpeg8_encode(
                image,
                level=_clamped_quality(settings.quality),
                subsampling=subsampling,
                optimize=True,
            )
        )

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        try:
            return imagecodecs.jpeg8_decode(data)
        except Exception as err:
            raise _decode_error(self.name, err) from err


class JpegXlCodec(_ImageCodec):
    name = "jxl"
    uses_effort = True
    summary = "JPEG XL (ISO 18181-1), lossy or --lossless, RGB"

    def _effort(self, settings: EncodeSettings) -> int:
        default = JXL_DEFAULT_LOSSLESS_EFFORT if settings.lossless else JXL_DEFAULT_EFFORT
        effort = default if settings.effort is None else settings.effort
        if not 1 <= effort <= 9:
            raise UsageError(f"jxl effort must be 1-9, not {effort}")
        return effort

    def target(self, settings: EncodeSettings) -> TargetEncoding:
        effort = self._effort(settings)
        if settings.lossless:
            return TargetEncoding(
                codec=self.name,
                transfer_syntax_uid=ts.JPEG_XL_LOSSLESS,
                photometric="RGB",
                lossy=False,
                lossy_method=None,
                description=f"JPEG XL lossless effort {effort}",
            )
        distance = quality_to_jxl_distance(settings.quality)
        return TargetEncoding(
            codec=self.name,
            transfer_syntax_uid=ts.JPEG_XL,
            photometric="RGB",
            lossy=True,
            lossy_method="ISO_18181_1",
            description=f"JPEG XL q{settings.quality} (distance {distance:.2f}) effort {effort}",
        )

    def unsupported_pixels(self, samples_per_pixel: int, bits_stored: int) -> str | None:
        if bits_stored > 16:
            return f"jxl here encodes up to 16-bit samples, not {bits_stored}-bit; use j2k"
        return None

    def encode(self, tile: np.ndarray, settings: EncodeSettings) -> bytes:
        import imagecodecs

        effort = self._effort(settings)
        image = _image(tile)
        if settings.lossless:
            return bytes(
                imagecodecs.jpegxl_encode(image, lossless=True, effort=effort, numthreads=1)
            )
        distance = quality_to_jxl_distance(settings.quality)
        return bytes(
            imagecodecs.jpegxl_encode(image, distance=distance, effort=effort, numthreads=1)
        )

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        try:
            return imagecodecs.jpegxl_decode(data, numthreads=1)
        except Exception as err:
            raise _decode_error(self.name, err) from err


class JpegXlRecompressCodec(_ImageCodec):
    name = "jxl-recompress"
    summary = "JPEG XL JPEG recompression: JPEG frames about 14% smaller, original bytes kept"

    def target(self, settings: EncodeSettings) -> TargetEncoding:
        # Quality and --lossless do not apply: the JPEG frames are kept exactly.
        return TargetEncoding(
            codec=self.name,
            transfer_syntax_uid=ts.JPEG_XL_JPEG_RECOMPRESSION,
            # The frames stay the source's JPEG (YCbCr 4:2:2 in VL WSI): keep its label.
            photometric="YBR_FULL_422",
            lossy=False,
            lossy_method=None,
            description="JPEG XL recompression of the JPEG frames (byte-exact)",
            compresses_source_bytes=True,
        )

    def accepts_source(self, transfer_syntax_uid: str) -> bool:
        return str(transfer_syntax_uid) == ts.JPEG_BASELINE

    def unsupported_pixels(self, samples_per_pixel: int, bits_stored: int) -> str | None:
        if bits_stored > 8:
            return (
                "jxl-recompress takes JPEG baseline (8-bit) frames only; "
                "use jxl --lossless for other sources"
            )
        return None

    def encode(self, tile: np.ndarray, settings: EncodeSettings) -> bytes:
        raise UsageError(
            "jxl-recompress works on JPEG baseline frames, not pixels; use jxl for other sources"
        )

    def recompress(self, source_frame: bytes, settings: EncodeSettings) -> bytes:
        import imagecodecs

        try:
            return bytes(imagecodecs.jpegxl_encode_jpeg(source_frame, numthreads=1))
        except Exception as err:
            raise DecodeError(
                f"JPEG frame cannot be recompressed to JPEG XL: {type(err).__name__}: {err}"
            ) from err

    def restore_source(self, data: bytes) -> bytes:
        import imagecodecs

        try:
            return bytes(imagecodecs.jpegxl_decode_jpeg(data, numthreads=1))
        except Exception as err:
            raise _decode_error(self.name, err) from err

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        try:
            return imagecodecs.jpegxl_decode(data, numthreads=1)
        except Exception as err:
            raise _decode_error(self.name, err) from err


def _codestream_main_header(data: bytes) -> bytes:
    """The J2K main header: from SOC up to the first SOT (0xFF90) marker."""
    end = data.find(b"\xff\x90")
    return data[: end if end > 0 else len(data)]


def j2k_uses_mct(data: bytes) -> bool:
    """Whether the COD marker of a J2K codestream enables the multiple component transform."""
    header = _codestream_main_header(data)
    pos = header.find(b"\xff\x52")
    if pos < 0 or pos + 9 > len(header):
        return False
    # COD: marker, Lcod(2), Scod(1), SGcod = progression(1) layers(2) MCT(1), ...
    return header[pos + 8] == 1


def j2k_is_reversible(data: bytes) -> bool:
    """Whether the COD marker selects the reversible 5/3 wavelet."""
    header = _codestream_main_header(data)
    pos = header.find(b"\xff\x52")
    if pos < 0 or pos + 14 > len(header):
        return False
    # ... SPcod = levels(1) cb width(1) cb height(1) cb style(1) transform(1): 1 = 5/3.
    return header[pos + 13] == 1


def j2k_codeblock_style(data: bytes) -> int:
    """The code-block style byte of the COD marker (0x40: HT code-blocks, ISO 15444-15)."""
    header = _codestream_main_header(data)
    pos = header.find(b"\xff\x52")
    if pos < 0 or pos + 13 > len(header):
        return 0
    return header[pos + 12]


def htj2k_capabilities(data: bytes) -> int | None:
    """The Ccap15 word of the CAP marker (HTJ2K, ISO 15444-15), or None without a Part 15 CAP."""
    header = _codestream_main_header(data)
    pos = header.find(b"\xff\x50")
    if pos < 0 or pos + 10 > len(header):
        return None
    pcap = int.from_bytes(header[pos + 4 : pos + 8], "big")
    part15 = 1 << (32 - 15)  # Pcap bit for Part 15, counted from the most significant bit
    if not pcap & part15:
        return None
    # Ccap words follow Pcap in the order of the parts whose bits are set; Part 15 is the only
    # one OpenJPH writes, but count the earlier ones to be safe.
    index = bin(pcap >> (32 - 14)).count("1")
    start = pos + 8 + 2 * index
    return int.from_bytes(header[start : start + 2], "big")


class Jpeg2000Codec(_ImageCodec):
    name = "j2k"
    summary = "JPEG 2000 (ISO 15444-1, OpenJPEG): YBR_ICT lossy or YBR_RCT --lossless"

    def target(self, settings: EncodeSettings) -> TargetEncoding:
        if settings.lossless:
            return TargetEncoding(
                codec=self.name,
                transfer_syntax_uid=ts.JPEG_2000_LOSSLESS,
                photometric="YBR_RCT",
                lossy=False,
                lossy_method=None,
                description="JPEG 2000 lossless (5/3, RCT)",
            )
        return TargetEncoding(
            codec=self.name,
            transfer_syntax_uid=ts.JPEG_2000,
            photometric="YBR_ICT",
            lossy=True,
            lossy_method="ISO_15444_1",
            description=(
                f"JPEG 2000 q{settings.quality} "
                f"(PSNR target {quality_to_psnr(settings.quality):.1f} dB, 9/7, ICT)"
            ),
        )

    def unsupported_pixels(self, samples_per_pixel: int, bits_stored: int) -> str | None:
        if bits_stored > 16:
            return f"j2k here encodes up to 16-bit samples, not {bits_stored}-bit"
        return None

    def encode(self, tile: np.ndarray, settings: EncodeSettings) -> bytes:
        import imagecodecs

        image = _image(tile)
        common = {"codecformat": "J2K", "mct": image.ndim == 3, "numthreads": 1}
        if settings.lossless:
            return bytes(imagecodecs.jpeg2k_encode(image, reversible=True, **common))
        if _is_constant(image):
            # A constant tile defeats OpenJPEG's PSNR-targeted rate allocation (a 16-bit tile of
            # zeros came back as 32768, all layers dropped). Without a rate target it comes back
            # within a step of its value, in a few dozen bytes, still 9/7 with the ICT that the
            # YBR_ICT label promises.
            return bytes(imagecodecs.jpeg2k_encode(image, reversible=False, **common))
        # OpenJPEG's PSNR target is relative to the sample precision's peak: keep the 8-bit
        # meaning of q for 16-bit samples, or a 37 dB target would erase their low bits.
        peak_gain_db = 20 * math.log10((2 ** _bits(image) - 1) / 255)
        level = quality_to_psnr(settings.quality) + peak_gain_db
        return bytes(imagecodecs.jpeg2k_encode(image, level=level, reversible=False, **common))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        try:
            return imagecodecs.jpeg2k_decode(data, numthreads=1)
        except Exception as err:
            raise _decode_error(self.name, err) from err


class Htj2kCodec(_ImageCodec):
    name = "htj2k"
    summary = "High-Throughput JPEG 2000 (ISO 15444-15, OpenJPH): fast, YBR_ICT or YBR_RCT"

    def target(self, settings: EncodeSettings) -> TargetEncoding:
        if settings.lossless:
            return TargetEncoding(
                codec=self.name,
                transfer_syntax_uid=ts.HTJ2K_LOSSLESS,
                photometric="YBR_RCT",
                lossy=False,
                lossy_method=None,
                description="HTJ2K lossless (5/3, RCT)",
            )
        step = quality_to_htj2k_step(settings.quality)
        return TargetEncoding(
            codec=self.name,
            transfer_syntax_uid=ts.HTJ2K,
            photometric="YBR_ICT",
            lossy=True,
            lossy_method="ISO_15444_15",
            description=f"HTJ2K q{settings.quality} (quantisation step {step:.4f}, 9/7, ICT)",
        )

    def unsupported_pixels(self, samples_per_pixel: int, bits_stored: int) -> str | None:
        if bits_stored > 16:
            return f"htj2k here encodes up to 16-bit samples, not {bits_stored}-bit"
        return None

    def encode(self, tile: np.ndarray, settings: EncodeSettings) -> bytes:
        import imagecodecs

        image = _image(tile)
        # rgb= turns on the colour transform; without it a 3-sample image would be coded
        # as independent components and the YBR_* label would be a lie.
        rgb = image.ndim == 3
        if settings.lossless:
            return bytes(imagecodecs.htj2k_encode(image, reversible=True, rgb=rgb))
        step = quality_to_htj2k_step(settings.quality)
        return bytes(imagecodecs.htj2k_encode(image, level=step, reversible=False, rgb=rgb))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        try:
            return imagecodecs.jpeg2k_decode(data, numthreads=1)
        except Exception as err:
            raise _decode_error(self.name, err) from err


class WebpCodec(_ImageCodec):
    name = "webp"
    uses_effort = True
    summary = "WebP (private transfer syntax: needs wsitranscode to read; not for archives)"

    def target(self, settings: EncodeSettings) -> TargetEncoding:
        method = self._method(settings)
        kind = "lossless" if settings.lossless else f"q{settings.quality}"
        return TargetEncoding(
            codec=self.name,
            transfer_syntax_uid=ts.PRIVATE_WEBP,
            photometric="RGB",
            lossy=not settings.lossless,
            lossy_method=None if settings.lossless else "WEBP",
            description=f"WebP {kind} method {method}",
            private=True,
        )

    def unsupported_pixels(self, samples_per_pixel: int, bits_stored: int) -> str | None:
        if samples_per_pixel != 3 or bits_stored > 8:
            return (
                f"WebP holds 8-bit RGB only, not {samples_per_pixel}-sample "
                f"{bits_stored}-bit pixels; use jxl, j2k or htj2k"
            )
        return None

    def _method(self, settings: EncodeSettings) -> int:
        method = WEBP_DEFAULT_METHOD if settings.effort is None else settings.effort
        if not 0 <= method <= 6:
            raise UsageError(f"webp effort (libwebp method) must be 0-6, not {method}")
        return method

    def encode(self, tile: np.ndarray, settings: EncodeSettings) -> bytes:
        import imagecodecs

        image = _image(tile)
        if image.ndim != 3 or image.dtype != np.uint8:
            raise UsageError("webp needs 8-bit RGB tiles")
        method = self._method(settings)
        # For lossless WebP `level` is an effort too; 75 is cwebp's default.
        level = 75 if settings.lossless else _clamped_quality(settings.quality)
        return bytes(
            imagecodecs.webp_encode(
                image, level=level, lossless=settings.lossless, method=method, numthreads=1
            )
        )

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        try:
            return imagecodecs.webp_decode(data, hasalpha=False)
        except Exception as err:
            raise _decode_error(self.name, err) from err


for _codec in (
    JpegCodec,
    JpegXlCodec,
    JpegXlRecompressCodec,
    Jpeg2000Codec,
    Htj2kCodec,
    WebpCodec,
):
    register(_codec.name, _codec)
