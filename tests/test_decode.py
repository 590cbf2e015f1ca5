"""Decoding source frames of every transfer syntax to RGB/monochrome tiles, and pydicom decoding
our outputs after `register_with_pydicom()`. Frames are built in the tests with independent
encoders (imagecodecs, pydicom); real third-party files are used when ../shared/data exists."""

from __future__ import annotations

import io
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import convert_color_space

from wsitranscode.codecs.base import EncodeSettings, get_codec
from wsitranscode.dicom import syntaxes as ts
from wsitranscode.dicom.decode import (
    PixelInfo,
    decode_frame,
    jpeg_colour_signals,
    jpeg_components_are_rgb,
    ybr_full_to_rgb,
)
from wsitranscode.errors import DecodeError, InvalidInputError, UnsupportedError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HIGHDICOM = SHARED_DATA / "dicom" / "highdicom"
EZ_WSI = SHARED_DATA / "dicom" / "ez-wsi" / "multiframe_camelyon_challenge_image.dcm"

H, W = 32, 48


def rgb_tile(h: int = H, w: int = W, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    smooth = np.stack([200 - 2 * y, 120 + 2 * x, 180 + y - x], axis=-1)
    return np.clip(smooth + rng.integers(-8, 9, (h, w, 3)), 0, 255).astype(np.uint8)


def mono16_tile(bits: int = 12, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.integers(0, 2**bits, (h, w), dtype=np.uint16)


def info_for(
    uid: str,
    *,
    photometric: str = "RGB",
    samples: int = 3,
    bits: int = 8,
    stored: int | None = None,
    planar: int = 0,
    h: int = H,
    w: int = W,
) -> PixelInfo:
    return PixelInfo(uid, h, w, samples, photometric, bits, stored or bits, 0, planar)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def to_ybr_full(rgb: np.ndarray) -> np.ndarray:
    # pydicom's own conversion: an implementation independent of ours.
    return convert_color_space(rgb, "RGB", "YBR_FULL")


# --- native -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uid",
    [
        ts.EXPLICIT_VR_LITTLE_ENDIAN,
        ts.IMPLICIT_VR_LITTLE_ENDIAN,
        ts.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ],
)
def test_native_rgb_is_a_view_on_the_bytes(uid):
    tile = rgb_tile()
    data = tile.tobytes()
    out = decode_frame(data, info_for(uid))
    np.testing.assert_array_equal(out, tile)
    assert not out.flags.writeable  # no copy was made


def test_native_planar_configuration_1():
    tile = rgb_tile()
    planar = np.ascontiguousarray(tile.transpose(2, 0, 1)).tobytes()
    out = decode_frame(planar, info_for(ts.EXPLICIT_VR_LITTLE_ENDIAN, planar=1))
    np.testing.assert_array_equal(out, tile)


def test_native_ybr_full_becomes_rgb():
    tile = rgb_tile()
    out = decode_frame(
        to_ybr_full(tile).tobytes(), info_for(ts.EXPLICIT_VR_LITTLE_ENDIAN, photometric="YBR_FULL")
    )
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - tile).max() <= 2  # rounding in two conversions


def test_ybr_full_conversion_matches_pydicom_on_every_value():
    rng = np.random.default_rng(5)
    ybr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ours = ybr_full_to_rgb(ybr)
    theirs = convert_color_space(ybr, "YBR_FULL", "RGB")
    assert ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_native_ybr_full_422_is_upsampled_to_rgb():
    tile = rgb_tile()
    tile[:, 1::2] = tile[:, 0::2]  # pairs share chroma, so 4:2:2 loses nothing
    ybr = to_ybr_full(tile)
    pairs = ybr.reshape(H, W // 2, 2, 3)
    quads = np.stack([pairs[..., 0, 0], pairs[..., 1, 0], pairs[..., 0, 1], pairs[..., 0, 2]], -1)
    info = info_for(ts.EXPLICIT_VR_LITTLE_ENDIAN, photometric="YBR_FULL_422")
    out = decode_frame(quads.astype(np.uint8).tobytes(), info)
    assert np.abs(out.astype(int) - tile).max() <= 2


def test_native_16_bit_monochrome_masks_unused_high_bits():
    mono = mono16_tile(12)
    dirty = mono | np.uint16(0xA000)  # garbage above Bits Stored 12
    info = info_for(
        ts.EXPLICIT_VR_LITTLE_ENDIAN, photometric="MONOCHROME2", samples=1, bits=16, stored=12
    )
    out = decode_frame(dirty.astype("<u2").tobytes(), info)
    assert out.shape == (H, W, 1) and out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 0], mono)


def test_native_frame_of_the_wrong_length_raises():
    info = info_for(ts.EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(DecodeError, match="bytes"):
        decode_frame(rgb_tile().tobytes()[:-10], info)
    with pytest.raises(DecodeError, match="bytes"):
        decode_frame(rgb_tile().tobytes() + b"\0" * 10, info)
    # One trailing pad byte (odd-length single frame) is fine.
    assert decode_frame(rgb_tile().tobytes() + b"\0", info).shape == (H, W, 3)


@pytest.mark.shared_data
def test_real_native_files_match_pydicom():
    for name in ("sm_image.dcm", "sm_image_grayscale.dcm"):
        path = HIGHDICOM / name
        if not path.exists():
            pytest.skip(f"real DICOM sample absent: {path} (needs ../shared/data)")
        ds = pydicom.dcmread(path)
        info = PixelInfo.from_dataset(ds)
        frame_bytes = len(ds.PixelData) // ds.NumberOfFrames
        expected = ds.pixel_array
        for index in (0, ds.NumberOfFrames - 1):
            frame = ds.PixelData[index * frame_bytes : (index + 1) * frame_bytes]
            out = decode_frame(frame, info)
            np.testing.assert_array_equal(out.reshape(expected[index].shape), expected[index])


# --- RLE --------------------------------------------------------------------------------------


def rle_frame(arr: np.ndarray, photometric: str) -> bytes:
    ds = small_dataset(arr, ts.EXPLICIT_VR_LITTLE_ENDIAN, photometric)
    ds.compress(ts.RLE_LOSSLESS, arr, encoding_plugin="pydicom")
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def test_rle_rgb_and_16_bit_monochrome():
    tile = rgb_tile()
    out = decode_frame(rle_frame(tile, "RGB"), info_for(ts.RLE_LOSSLESS))
    np.testing.assert_array_equal(out, tile)
    mono = mono16_tile(16)
    info = info_for(ts.RLE_LOSSLESS, photometric="MONOCHROME2", samples=1, bits=16)
    out = decode_frame(rle_frame(mono, "MONOCHROME2"), info)
    np.testing.assert_array_equal(out[..., 0], mono)


def test_rle_with_a_wrong_segment_count_raises():
    frame = rle_frame(rgb_tile(), "RGB")
    info = info_for(ts.RLE_LOSSLESS, photometric="MONOCHROME2", samples=1)
    with pytest.raises(DecodeError, match="segments"):
        decode_frame(frame, info)


# --- JPEG -------------------------------------------------------------------------------------


def strip_app_markers(jpeg: bytes) -> bytes:
    """Remove APPn segments (JFIF, Adobe) from a JPEG stream."""
    out = bytearray(jpeg[:2])
    pos = 2
    while True:
        marker = jpeg[pos + 1]
        if marker == 0xDA:
            return bytes(out + jpeg[pos:])
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if not 0xE0 <= marker <= 0xEF:
            out += jpeg[pos : pos + 2 + length]
        pos += 2 + length


def set_component_ids(jpeg: bytes, ids: bytes) -> bytes:
    """Rewrite the SOF0 component ids (and the matching SOS selectors)."""
    data = bytearray(jpeg)
    sof = data.find(b"\xff\xc0")
    old = [data[sof + 10 + 3 * i] for i in range(3)]
    for i in range(3):
        data[sof + 10 + 3 * i] = ids[i]
    sos = data.find(b"\xff\xda")
    for i in range(3):
        assert data[sos + 5 + 2 * i] == old[i]
        data[sos + 5 + 2 * i] = ids[i]
    return bytes(data)


def test_jpeg_ybr_full_422_with_jfif():
    tile = rgb_tile()
    jpeg = bytes(imagecodecs.jpeg8_encode(tile, level=95, subsampling="422"))
    assert jpeg_colour_signals(jpeg).jfif
    out = decode_frame(jpeg, info_for(ts.JPEG_BASELINE, photometric="YBR_FULL_422"))
    assert out.shape == (H, W, 3) and psnr(tile, out) > 30


def test_frames_given_as_memoryview_or_bytearray_decode_too():
    tile = rgb_tile()
    jpeg = bytes(imagecodecs.jpeg8_encode(tile, level=95, subsampling="422"))
    info = info_for(ts.JPEG_BASELINE, photometric="YBR_FULL_422")
    expected = decode_frame(jpeg, info)
    for view in (memoryview(jpeg), bytearray(jpeg)):
        np.testing.assert_array_equal(decode_frame(view, info), expected)
    native = decode_frame(memoryview(tile.tobytes()), info_for(ts.EXPLICIT_VR_LITTLE_ENDIAN))
    np.testing.assert_array_equal(native, tile)


def test_jpeg_rgb_with_adobe_marker_is_not_colour_transformed():
    tile = rgb_tile()
    jpeg = bytes(imagecodecs.jpeg8_encode(tile, level=95, colorspace="RGB", outcolorspace="RGB"))
    assert jpeg_colour_signals(jpeg).adobe_transform == 0
    # The marker wins even over a wrong YBR label.
    for photometric in ("RGB", "YBR_FULL_422"):
        out = decode_frame(jpeg, info_for(ts.JPEG_BASELINE, photometric=photometric))
        assert psnr(tile, out) > 35


def test_jpeg_without_markers_follows_the_dicom_label():
    tile = rgb_tile()
    # libjpeg-turbo names RGB components 'R','G','B'; many writers use 1, 2, 3 instead.
    stored_rgb = set_component_ids(
        strip_app_markers(
            bytes(imagecodecs.jpeg8_encode(tile, level=95, colorspace="RGB", outcolorspace="RGB"))
        ),
        b"\x01\x02\x03",
    )
    stored_ycc = strip_app_markers(bytes(imagecodecs.jpeg8_encode(tile, level=95)))
    for data in (stored_rgb, stored_ycc):
        signals = jpeg_colour_signals(data)
        assert signals.adobe_transform is None and not signals.jfif
        assert signals.component_ids == (1, 2, 3)
    rgb = decode_frame(stored_rgb, info_for(ts.JPEG_BASELINE, photometric="RGB"))
    ycc = decode_frame(stored_ycc, info_for(ts.JPEG_BASELINE, photometric="YBR_FULL_422"))
    assert psnr(tile, rgb) > 35 and psnr(tile, ycc) > 30
    # The label matters here: read with the other label, the colours are wrong.
    wrong = decode_frame(stored_rgb, info_for(ts.JPEG_BASELINE, photometric="YBR_FULL_422"))
    assert psnr(tile, wrong) < 25


def test_jpeg_component_ids_rgb_mean_no_transform():
    tile = rgb_tile()
    named = strip_app_markers(
        bytes(imagecodecs.jpeg8_encode(tile, level=95, colorspace="RGB", outcolorspace="RGB"))
    )
    signals = jpeg_colour_signals(named)
    assert signals.component_ids == (82, 71, 66)
    assert jpeg_components_are_rgb(signals, "YBR_FULL_422")
    out = decode_frame(named, info_for(ts.JPEG_BASELINE, photometric="YBR_FULL_422"))
    assert psnr(tile, out) > 35


def test_jpeg_monochrome_and_12_bit_extended():
    gray = rgb_tile()[..., 0].copy()
    out = decode_frame(
        bytes(imagecodecs.jpeg8_encode(gray, level=95)),
        info_for(ts.JPEG_BASELINE, photometric="MONOCHROME2", samples=1),
    )
    assert out.shape == (H, W, 1) and psnr(gray, out[..., 0]) > 35
    mono = mono16_tile(12)
    data = bytes(imagecodecs.jpeg8_encode(mono, level=95, bitspersample=12))
    info = info_for(ts.JPEG_EXTENDED, photometric="MONOCHROME2", samples=1, bits=16, stored=12)
    out = decode_frame(data, info)
    assert out.dtype == np.uint16 and np.abs(out[..., 0].astype(int) - mono).mean() < 40


@pytest.mark.parametrize("uid", [ts.JPEG_LOSSLESS, ts.JPEG_LOSSLESS_SV1])
def test_jpeg_lossless_is_exact(uid):
    tile = rgb_tile()
    data = bytes(imagecodecs.jpeg8_encode(tile, lossless=True, predictor=1))
    np.testing.assert_array_equal(decode_frame(data, info_for(uid)), tile)
    mono = mono16_tile(16)
    data = bytes(imagecodecs.jpeg8_encode(mono, lossless=True, predictor=1, bitspersample=16))
    info = info_for(uid, photometric="MONOCHROME2", samples=1, bits=16)
    np.testing.assert_array_equal(decode_frame(data, info)[..., 0], mono)


@pytest.mark.shared_data
def test_real_jpeg_wsi_matches_pydicom():
    if not EZ_WSI.exists():
        pytest.skip(f"real DICOM sample absent: {EZ_WSI} (needs ../shared/data)")
    ds = pydicom.dcmread(EZ_WSI)
    info = PixelInfo.from_dataset(ds)
    assert info.photometric == "YBR_FULL_422"
    frames = generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)
    expected = ds.pixel_array  # pydicom: Pillow's libjpeg, then its own YCbCr -> RGB
    for index, frame in enumerate(frames):
        out = decode_frame(frame, info)
        assert np.abs(out.astype(int) - expected[index]).max() <= 2


# --- JPEG-LS, JPEG 2000, HTJ2K ------------------------------------------------------------------


@pytest.mark.parametrize("uid", [ts.JPEG_LS_LOSSLESS, ts.JPEG_LS_NEAR_LOSSLESS])
def test_jpegls(uid):
    tile = rgb_tile()
    data = bytes(imagecodecs.jpegls_encode(tile))
    np.testing.assert_array_equal(decode_frame(data, info_for(uid)), tile)


@pytest.mark.shared_data
def test_real_jpegls_files_match_their_native_twin():
    native_path = HIGHDICOM / "sm_image.dcm"
    if not native_path.exists():
        pytest.skip(f"real DICOM sample absent: {native_path} (needs ../shared/data)")
    expected = pydicom.dcmread(native_path).pixel_array
    for name in ("sm_image_jpegls.dcm", "sm_image_jpegls_nobot.dcm"):
        ds = pydicom.dcmread(HIGHDICOM / name)
        info = PixelInfo.from_dataset(ds)
        frames = generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)
        out = np.stack([decode_frame(frame, info) for frame in frames])
        np.testing.assert_array_equal(out, expected)


def j2k(tile: np.ndarray, **kwargs) -> bytes:
    return bytes(imagecodecs.jpeg2k_encode(tile, codecformat="J2K", **kwargs))


def test_jpeg2000_rct_ict_rgb_and_ybr_full():
    tile = rgb_tile()
    rct = j2k(tile, reversible=True)
    out = decode_frame(rct, info_for(ts.JPEG_2000_LOSSLESS, photometric="YBR_RCT"))
    np.testing.assert_array_equal(out, tile)
    ict = j2k(tile, level=45, reversible=False)
    assert psnr(tile, decode_frame(ict, info_for(ts.JPEG_2000, photometric="YBR_ICT"))) > 35
    no_mct = j2k(tile, reversible=True, mct=False)
    out = decode_frame(no_mct, info_for(ts.JPEG_2000_LOSSLESS, photometric="RGB"))
    np.testing.assert_array_equal(out, tile)
    # YBR_FULL in a J2K frame: samples converted before coding, no MCT; we convert back.
    ybr = j2k(to_ybr_full(tile), reversible=True, mct=False)
    out = decode_frame(ybr, info_for(ts.JPEG_2000_LOSSLESS, photometric="YBR_FULL"))
    assert np.abs(out.astype(int) - tile).max() <= 2


def test_jpeg2000_16_bit_monochrome():
    mono = mono16_tile(16)
    info = info_for(ts.JPEG_2000_LOSSLESS, photometric="MONOCHROME2", samples=1, bits=16)
    np.testing.assert_array_equal(decode_frame(j2k(mono, reversible=True), info)[..., 0], mono)


@pytest.mark.parametrize("uid", [ts.HTJ2K_LOSSLESS, ts.HTJ2K_LOSSLESS_RPCL])
def test_htj2k_lossless(uid):
    tile = rgb_tile()
    data = bytes(imagecodecs.htj2k_encode(tile, reversible=True))
    np.testing.assert_array_equal(decode_frame(data, info_for(uid, photometric="YBR_RCT")), tile)


def test_htj2k_lossy():
    tile = rgb_tile()
    data = bytes(imagecodecs.htj2k_encode(tile, level=0.01))
    assert psnr(tile, decode_frame(data, info_for(ts.HTJ2K, photometric="YBR_ICT"))) > 35


# --- JPEG XL and WebP -------------------------------------------------------------------------


def test_jpeg_xl_all_three_syntaxes():
    tile = rgb_tile()
    lossless = bytes(imagecodecs.jpegxl_encode(tile, lossless=True))
    np.testing.assert_array_equal(decode_frame(lossless, info_for(ts.JPEG_XL_LOSSLESS)), tile)
    lossy = bytes(imagecodecs.jpegxl_encode(tile, distance=1.0))
    assert psnr(tile, decode_frame(lossy, info_for(ts.JPEG_XL))) > 30
    jpeg = bytes(imagecodecs.jpeg8_encode(tile, level=90, subsampling="422"))
    recompressed = bytes(imagecodecs.jpegxl_encode_jpeg(jpeg))
    info = info_for(ts.JPEG_XL_JPEG_RECOMPRESSION, photometric="YBR_FULL_422")
    assert psnr(imagecodecs.jpeg8_decode(jpeg), decode_frame(recompressed, info)) > 40


def test_jpeg_xl_16_bit_monochrome():
    mono = mono16_tile(16)
    data = bytes(imagecodecs.jpegxl_encode(mono, lossless=True))
    info = info_for(ts.JPEG_XL_LOSSLESS, photometric="MONOCHROME2", samples=1, bits=16)
    np.testing.assert_array_equal(decode_frame(data, info)[..., 0], mono)


def test_private_webp():
    tile = rgb_tile()
    data = bytes(imagecodecs.webp_encode(tile, lossless=True))
    np.testing.assert_array_equal(decode_frame(data, info_for(ts.PRIVATE_WEBP)), tile)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", sorted(uid for uid in ts.SYNTAXES if ts.is_encapsulated(uid)))
def test_garbage_bytes_raise_decode_error(uid):
    garbage = b"\xff\xd8\xff\x4f\xff\x51" + bytes(range(256)) * 2
    with pytest.raises(DecodeError) as caught:
        decode_frame(garbage, info_for(uid))
    assert "\n" not in str(caught.value)


def test_frame_of_the_wrong_shape_raises():
    data = bytes(imagecodecs.jpegxl_encode(rgb_tile(), lossless=True))
    with pytest.raises(DecodeError, match="shape"):
        decode_frame(data, info_for(ts.JPEG_XL_LOSSLESS, h=H // 2))
    mono = bytes(imagecodecs.jpegxl_encode(rgb_tile()[..., 0].copy(), lossless=True))
    with pytest.raises(DecodeError, match="shape"):
        decode_frame(mono, info_for(ts.JPEG_XL_LOSSLESS))
    with pytest.raises(DecodeError, match="uint8"):
        decode_frame(data, info_for(ts.JPEG_XL_LOSSLESS, photometric="RGB", bits=16))


# --- PixelInfo --------------------------------------------------------------------------------


def small_dataset(arr: np.ndarray, uid: str, photometric: str, frames: int = 1) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 1 if arr.ndim == 2 else arr.shape[2]
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = arr.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    return ds


def test_pixel_info_from_dataset():
    ds = small_dataset(rgb_tile(), ts.JPEG_BASELINE, "YBR_FULL_422")
    info = PixelInfo.from_dataset(ds)
    assert info == PixelInfo(ts.JPEG_BASELINE, H, W, 3, "YBR_FULL_422", 8, 8, 0, 0)
    assert info.shape == (H, W, 3) and info.dtype == np.uint8


def test_pixel_info_rejects_what_cannot_be_decoded():
    ds = small_dataset(rgb_tile(), ts.JPEG_BASELINE, "RGB")
    del ds.Rows
    with pytest.raises(InvalidInputError, match="Rows"):
        PixelInfo.from_dataset(ds)
    ds = small_dataset(rgb_tile(), "1.2.840.10008.1.2.4.100", "RGB")
    with pytest.raises(UnsupportedError, match=r"MPEG2|cannot decode"):
        PixelInfo.from_dataset(ds)
    ds = small_dataset(mono16_tile(), ts.EXPLICIT_VR_LITTLE_ENDIAN, "MONOCHROME2")
    ds.PixelRepresentation = 1
    with pytest.raises(UnsupportedError, match="signed"):
        PixelInfo.from_dataset(ds)
    ds = small_dataset(rgb_tile(), ts.EXPLICIT_VR_LITTLE_ENDIAN, "PALETTE COLOR")
    with pytest.raises(UnsupportedError, match="PALETTE"):
        PixelInfo.from_dataset(ds)
    ds = small_dataset(rgb_tile(), ts.EXPLICIT_VR_LITTLE_ENDIAN, "RGB")
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(InvalidInputError, match="Transfer Syntax"):
        PixelInfo.from_dataset(ds)


# --- syntaxes and pydicom ----------------------------------------------------------------------


def test_syntax_registry():
    assert ts.name_of(ts.JPEG_XL) == "JPEG XL"
    assert ts.name_of(ts.PRIVATE_WEBP).startswith("WebP")
    assert ts.name_of("1.2.840.10008.1.2.4.100").startswith("MPEG2")
    assert "unknown" in ts.name_of("1.2.3.4")
    assert not ts.is_encapsulated(ts.EXPLICIT_VR_LITTLE_ENDIAN)
    assert not ts.is_encapsulated(ts.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    assert ts.is_encapsulated(ts.HTJ2K) and ts.is_encapsulated(ts.PRIVATE_WEBP)
    assert ts.is_lossy(ts.JPEG_2000) and ts.is_lossy(ts.JPEG_XL) and ts.is_lossy(ts.JPEG_BASELINE)
    assert not ts.is_lossy(ts.JPEG_2000_LOSSLESS) and not ts.is_lossy(ts.HTJ2K_LOSSLESS)
    assert not ts.is_lossy(ts.JPEG_XL_JPEG_RECOMPRESSION)
    assert ts.is_private(ts.PRIVATE_WEBP) and not ts.is_private(ts.JPEG_XL)
    assert ts.PRIVATE_WEBP.startswith(ts.PROJECT_ROOT + ".1.")
    assert len(ts.PRIVATE_WEBP) <= 64 and pydicom.uid.UID(ts.PRIVATE_WEBP).is_valid


def test_register_with_pydicom_is_idempotent_and_truthful():
    ts.register_with_pydicom()
    ts.register_with_pydicom()
    for uid in (ts.JPEG_XL, ts.JPEG_XL_LOSSLESS, ts.JPEG_XL_JPEG_RECOMPRESSION, ts.PRIVATE_WEBP):
        u = pydicom.uid.UID(uid)
        assert u.is_transfer_syntax and u.is_encapsulated and u.is_compressed
        assert u.is_little_endian and not u.is_implicit_VR and not u.is_deflated
    assert pydicom.uid.UID(ts.JPEG_XL).name == "JPEG XL"
    assert pydicom.uid.PrivateTransferSyntaxes.count(ts.PRIVATE_WEBP) == 1
    # Other private UIDs are untouched.
    assert not pydicom.uid.UID(ts.PROJECT_ROOT + ".9.9").is_transfer_syntax


@pytest.mark.parametrize(
    ("name", "lossless"),
    [
        ("jxl", False),
        ("jxl", True),
        ("htj2k", False),
        ("htj2k", True),
        ("webp", False),
        ("j2k", False),
    ],
)
def test_pydicom_decodes_our_outputs(name, lossless):
    ts.register_with_pydicom()
    codec = get_codec(name)
    settings = EncodeSettings(quality=90, lossless=lossless)
    target = codec.target(settings)
    tiles = [rgb_tile(seed=s) for s in (1, 2)]
    frames = [codec.encode(tile, settings) for tile in tiles]
    ds = small_dataset(tiles[0], target.transfer_syntax_uid, target.photometric, frames=2)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    arr = back.pixel_array
    assert arr.shape == (2, H, W, 3)
    ours = np.stack([decode_frame(f, PixelInfo.from_dataset(back)) for f in frames])
    np.testing.assert_array_equal(arr, ours)
    if lossless:
        np.testing.assert_array_equal(arr, np.stack(tiles))
    iterated = list(pydicom.pixels.iter_pixels(io.BytesIO(buffer.getvalue())))
    np.testing.assert_array_equal(np.stack(iterated), arr)
