"""The classic codecs (imagecodecs): round trips, lossless exactness, quality ordering,
determinism, truthful codestreams (MCT, HT markers), and validator acceptance."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from wsitranscode.codecs import classic
from wsitranscode.codecs.base import EncodeSettings, codec_names, get_codec
from wsitranscode.dicom import syntaxes as ts
from wsitranscode.errors import DecodeError, UsageError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TISSUE_PNG = SHARED_DATA / "tissue" / "histolab" / "medium-nuclei-score-level0.png"
EZ_WSI = SHARED_DATA / "dicom" / "ez-wsi" / "multiframe_camelyon_challenge_image.dcm"

LOSSY = ["jpeg", "jxl", "j2k", "htj2k", "webp"]
LOSSLESS = ["jxl", "j2k", "htj2k", "webp"]
TILE = 128


def synthetic_tile(size: int = TILE, seed: int = 7) -> np.ndarray:
    """A tissue-like RGB tile: pink background, purple blobs (nuclei), texture and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack([235 - 0.1 * x, 190 - 0.15 * y, 215 + 0 * x], axis=-1)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(4, 12)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        base = base * (1 - 0.6 * blob) + np.array([90, 40, 140]) * 0.6 * blob
    base += rng.normal(0, 6, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def tissue_tile(size: int = TILE) -> np.ndarray:
    if not TISSUE_PNG.exists():
        pytest.skip(f"real tissue sample absent: {TISSUE_PNG} (needs ../shared/data)")
    image = imagecodecs.imread(TISSUE_PNG)[..., :3]
    return np.ascontiguousarray(image[256 : 256 + size, 256 : 256 + size])


@pytest.fixture(params=["synthetic", "tissue"])
def tile(request: pytest.FixtureRequest) -> np.ndarray:
    return synthetic_tile() if request.param == "synthetic" else tissue_tile()


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    b = b.reshape(a.shape)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def test_registry_lists_every_classic_codec():
    assert {"jpeg", "jxl", "jxl-recompress", "j2k", "htj2k", "webp"} <= set(codec_names())
    assert get_codec("jxl") is get_codec("jxl")
    with pytest.raises(UsageError, match="unknown codec"):
        get_codec("gif")


@pytest.mark.parametrize(
    ("name", "lossless", "uid", "photometric", "method"),
    [
        ("jpeg", False, ts.JPEG_BASELINE, "YBR_FULL_422", "ISO_10918_1"),
        ("jxl", False, ts.JPEG_XL, "RGB", "ISO_18181_1"),
        ("jxl", True, ts.JPEG_XL_LOSSLESS, "RGB", None),
        ("j2k", False, ts.JPEG_2000, "YBR_ICT", "ISO_15444_1"),
        ("j2k", True, ts.JPEG_2000_LOSSLESS, "YBR_RCT", None),
        ("htj2k", False, ts.HTJ2K, "YBR_ICT", "ISO_15444_15"),
        ("htj2k", True, ts.HTJ2K_LOSSLESS, "YBR_RCT", None),
        ("webp", False, ts.PRIVATE_WEBP, "RGB", "WEBP"),
        ("webp", True, ts.PRIVATE_WEBP, "RGB", None),
    ],
)
def test_target_describes_the_output(name, lossless, uid, photometric, method):
    target = get_codec(name).target(EncodeSettings(quality=80, lossless=lossless))
    assert target.transfer_syntax_uid == uid
    assert target.photometric == photometric
    assert target.lossy is (not lossless)
    assert target.lossy_method == method
    assert target.private is (name == "webp")
    assert not target.compresses_source_bytes


def test_jpeg_refuses_lossless_with_an_alternative():
    with pytest.raises(UsageError, match="jxl"):
        get_codec("jpeg").target(EncodeSettings(lossless=True))


def test_effort_out_of_range_is_a_usage_error():
    with pytest.raises(UsageError, match="effort"):
        get_codec("jxl").target(EncodeSettings(effort=11))
    with pytest.raises(UsageError, match="effort"):
        get_codec("webp").target(EncodeSettings(effort=7))


@pytest.mark.parametrize(("name", "fast", "slow"), [("jxl", 1, 7), ("webp", 0, 6)])
def test_effort_trades_time_for_size(name, fast, slow):
    codec = get_codec(name)
    tile = synthetic_tile()
    quick = codec.encode(tile, EncodeSettings(quality=80, effort=fast))
    thorough = codec.encode(tile, EncodeSettings(quality=80, effort=slow))
    assert quick != thorough
    assert str(slow) in codec.target(EncodeSettings(effort=slow)).description


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_round_trip_keeps_shape_and_quality(name, tile):
    codec = get_codec(name)
    settings = EncodeSettings(quality=85)
    data = codec.encode(tile, settings)
    assert isinstance(data, bytes)
    assert len(data) < tile.nbytes / 2
    back = codec.decode(data)
    assert back.shape == tile.shape
    assert back.dtype == np.uint8
    assert 30.0 < psnr(tile, back) < float("inf")


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_is_exact(name, tile):
    codec = get_codec(name)
    settings = EncodeSettings(lossless=True)
    assert not codec.target(settings).lossy
    back = codec.decode(codec.encode(tile, settings))
    np.testing.assert_array_equal(back.reshape(tile.shape), tile)


@pytest.mark.parametrize("name", ["jxl", "j2k", "htj2k"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_monochrome_lossless_is_exact(name, dtype):
    rng = np.random.default_rng(3)
    peak = 255 if dtype == np.uint8 else 4095  # 12 bits stored in 16
    scaled = synthetic_tile(64)[..., 1].astype(np.float64) / 255 * peak
    mono = np.clip(scaled + rng.integers(0, 3, scaled.shape), 0, peak).astype(dtype)
    codec = get_codec(name)
    assert codec.unsupported_pixels(1, 12 if dtype == np.uint16 else 8) is None
    back = codec.decode(codec.encode(mono[..., np.newaxis], EncodeSettings(lossless=True)))
    assert back.dtype == dtype
    np.testing.assert_array_equal(back.reshape(mono.shape), mono)


@pytest.mark.parametrize("name", LOSSY)
def test_quality_orders_size_and_fidelity(name, tile):
    codec = get_codec(name)
    results = []
    for quality in (30, 60, 90):
        data = codec.encode(tile, EncodeSettings(quality=quality))
        results.append((len(data), psnr(tile, codec.decode(data))))
    sizes = [size for size, _ in results]
    fidelity = [db for _, db in results]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3, results
    assert fidelity == sorted(fidelity), results


@pytest.mark.parametrize("name", [*LOSSY, "jxl-lossless", "j2k-lossless", "htj2k-lossless"])
def test_encode_is_deterministic_across_threads(name):
    codec_name, _, mode = name.partition("-")
    codec = get_codec(codec_name)
    settings = EncodeSettings(quality=80, lossless=mode == "lossless")
    tile = synthetic_tile()
    first = codec.encode(tile, settings)
    barrier = threading.Barrier(2)

    def encode_in_thread(_: int) -> bytes:
        barrier.wait(timeout=10)
        return codec.encode(tile.copy(), settings)

    with ThreadPoolExecutor(max_workers=2) as pool:
        others = list(pool.map(encode_in_thread, range(2)))
    assert all(other == first for other in others)


def test_j2k_codestream_uses_the_transform_its_label_names():
    codec = get_codec("j2k")
    tile = synthetic_tile()
    lossy = codec.encode(tile, EncodeSettings(quality=85))
    lossless = codec.encode(tile, EncodeSettings(lossless=True))
    for data in (lossy, lossless):
        assert data[:4] == b"\xff\x4f\xff\x51"  # a raw J2K codestream (no JP2 box)
        assert classic.j2k_uses_mct(data)
    assert not classic.j2k_is_reversible(lossy)  # 9/7 + MCT = ICT -> YBR_ICT
    assert classic.j2k_is_reversible(lossless)  # 5/3 + MCT = RCT -> YBR_RCT
    flat = codec.encode(np.full((16, 16, 3), 200, np.uint8), EncodeSettings(quality=85))
    assert classic.j2k_uses_mct(flat) and not classic.j2k_is_reversible(flat)  # a flat tile too
    # The check can fail: a codestream written without the MCT is detected.
    plain = imagecodecs.jpeg2k_encode(tile, level=40, codecformat="J2K", mct=False)
    assert not classic.j2k_uses_mct(plain)


def test_htj2k_codestreams_are_really_high_throughput():
    codec = get_codec("htj2k")
    tile = synthetic_tile()
    for settings in (EncodeSettings(quality=85), EncodeSettings(lossless=True)):
        data = codec.encode(tile, settings)
        caps = classic.htj2k_capabilities(data)
        assert caps is not None, "no CAP marker with the Part 15 bit"
        assert caps >> 14 == 0, "Ccap15 should declare HTONLY code-blocks"
        assert classic.j2k_uses_mct(data)
        assert classic.j2k_is_reversible(data) is settings.lossless
        assert classic.j2k_codeblock_style(data) & 0x40, "code-block style lacks the HT flag"
    # A Part 1 codestream has neither: the check can fail.
    part1 = get_codec("j2k").encode(tile, EncodeSettings(quality=85))
    assert classic.htj2k_capabilities(part1) is None
    assert not classic.j2k_codeblock_style(part1) & 0x40


def test_htj2k_decodes_close_to_its_part1_peer():
    # The OpenJPEG decoder is used for HTJ2K (OpenJPH's reconstructs lossy streams worse).
    tile = synthetic_tile()
    data = get_codec("htj2k").encode(tile, EncodeSettings(quality=90))
    ours = psnr(tile, get_codec("htj2k").decode(data))
    assert ours >= psnr(tile, imagecodecs.htj2k_decode(data)) - 0.05


@pytest.mark.parametrize(("name", "ok"), [("jpeg", False), ("webp", False), ("jxl", True)])
def test_sixteen_bit_support_is_explained(name, ok):
    reason = get_codec(name).unsupported_pixels(1, 16)
    if ok:
        assert reason is None
    else:
        assert reason and "16-bit" in reason and "jxl" in reason


def test_webp_refuses_monochrome_and_jpeg_accepts_it():
    assert "RGB" in get_codec("webp").unsupported_pixels(1, 8)
    assert get_codec("jpeg").unsupported_pixels(1, 8) is None
    mono = synthetic_tile()[..., :1].copy()
    back = get_codec("jpeg").decode(get_codec("jpeg").encode(mono, EncodeSettings(quality=90)))
    assert back.shape == mono.shape[:2] and psnr(mono[..., 0], back) > 30


def test_webp_lossy_really_is_lossy():
    # imagecodecs' webp_encode is lossless unless told otherwise.
    tile = synthetic_tile()
    codec = get_codec("webp")
    lossy = codec.encode(tile, EncodeSettings(quality=80))
    lossless = codec.encode(tile, EncodeSettings(lossless=True))
    assert len(lossy) < len(lossless) / 2
    assert psnr(tile, codec.decode(lossy)) < float("inf")


def test_quality_mappings_are_monotonic():
    qualities = range(0, 101, 5)
    psnrs = [classic.quality_to_psnr(q) for q in qualities]
    steps = [classic.quality_to_htj2k_step(q) for q in qualities]
    distances = [classic.quality_to_jxl_distance(q) for q in qualities]
    assert psnrs == sorted(psnrs)
    assert steps == sorted(steps, reverse=True) and min(steps) > 0 and max(steps) <= 1
    assert distances == sorted(distances, reverse=True)
    assert classic.quality_to_jxl_distance(90) == pytest.approx(1.0)
    assert classic.quality_to_psnr(150) == classic.quality_to_psnr(100)


# --- jxl-recompress ---------------------------------------------------------------------------


def test_jxl_recompress_restores_the_jpeg_bytes_exactly(tile):
    codec = get_codec("jxl-recompress")
    target = codec.target(EncodeSettings())
    assert target.compresses_source_bytes and not target.lossy
    assert target.transfer_syntax_uid == ts.JPEG_XL_JPEG_RECOMPRESSION
    jpeg = bytes(imagecodecs.jpeg8_encode(tile, level=85, subsampling="422"))
    data = codec.recompress(jpeg, EncodeSettings())
    assert len(data) < len(jpeg)
    assert codec.restore_source(data) == jpeg
    pixels = codec.decode(data)
    assert pixels.shape == tile.shape
    # libjxl reconstructs the pixels from the same DCT coefficients libjpeg would decode.
    assert psnr(imagecodecs.jpeg8_decode(jpeg), pixels) > 40


def test_jxl_recompress_accepts_only_jpeg_baseline_frames():
    codec = get_codec("jxl-recompress")
    assert codec.accepts_source(ts.JPEG_BASELINE)
    for uid in (ts.EXPLICIT_VR_LITTLE_ENDIAN, ts.JPEG_2000, ts.JPEG_XL, ts.JPEG_LOSSLESS_SV1):
        assert not codec.accepts_source(uid)
    with pytest.raises(UsageError):
        codec.encode(synthetic_tile(), EncodeSettings())
    with pytest.raises(DecodeError):
        codec.recompress(b"\x00not a jpeg" * 10, EncodeSettings())


@pytest.mark.parametrize("name", [*LOSSY, "jxl-recompress"])
def test_garbage_bytes_raise_decode_error(name):
    with pytest.raises(DecodeError):
        get_codec(name).decode(b"\xff\xd8 this is not an image" * 4)


# --- the validator accepts what the codecs write ----------------------------------------------


@pytest.mark.shared_data
@pytest.mark.slow
def test_dciodvfy_accepts_every_standard_output(tmp_path: Path):
    """Re-encode a real third-party VL WSI file with each codec; dciodvfy reports no new error."""
    if not EZ_WSI.exists():
        pytest.skip(f"real DICOM sample absent: {EZ_WSI} (needs ../shared/data)")
    from tests.dicom_checks import dciodvfy_errors
    from wsitranscode.dicom.decode import PixelInfo, decode_frame

    ts.register_with_pydicom()
    source = pydicom.dcmread(EZ_WSI)
    frames = list(generate_frames(source.PixelData, number_of_frames=source.NumberOfFrames))
    info = PixelInfo.from_dataset(source)
    tiles = [decode_frame(frame, info) for frame in frames]
    baseline = set(dciodvfy_errors(EZ_WSI))
    cases = [("jpeg", False), ("jxl", False), ("jxl", True), ("j2k", False), ("j2k", True)]
    cases += [("htj2k", False), ("htj2k", True), ("jxl-recompress", False)]
    for name, lossless in cases:
        codec = get_codec(name)
        settings = EncodeSettings(quality=80, lossless=lossless)
        target = codec.target(settings)
        if target.compresses_source_bytes:
            encoded = [codec.recompress(frame, settings) for frame in frames]
        else:
            encoded = [codec.encode(t, settings) for t in tiles]
        path = tmp_path / f"{name}-{lossless}.dcm"
        _write_like(source, target, encoded, path)
        new_errors = sorted(set(dciodvfy_errors(path)) - baseline)
        assert new_errors == [], f"{name} lossless={lossless}: {new_errors}"


def _write_like(source, target, encoded: list[bytes], path: Path) -> None:
    ds = source.copy()
    ds.file_meta = source.file_meta.copy()
    ds.file_meta.TransferSyntaxUID = target.transfer_syntax_uid
    ds.PhotometricInterpretation = target.photometric
    ds.NumberOfFrames = len(encoded)
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    if target.lossy:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = ["ISO_10918_1", target.lossy_method]
        ds.LossyImageCompressionRatio = ["26.1", "20"]
    ds.save_as(path, enforce_file_format=True)


_FLAT_TILES = [(0, (10, 10), np.uint16), (1, (10, 10), np.uint16), (24, (64, 64), np.uint16),
               (0, (16, 16, 3), np.uint8), (200, (16, 16, 3), np.uint8)]  # fmt: skip
_SIXTEEN_BIT = ("jxl", "j2k", "htj2k")  # jpeg and webp have no 16-bit mode


@pytest.mark.parametrize(
    "name, value, shape, dtype",
    [(name, *flat) for name in LOSSY for flat in _FLAT_TILES
     if flat[2] == np.uint8 or name in _SIXTEEN_BIT],
)  # fmt: skip
def test_lossy_codecs_keep_a_constant_tile(name, value, shape, dtype):
    """A flat frame (glass, a blank 16-bit channel) comes back near its own value, within 1% of the
    sample range (q is relative to the full range): OpenJPEG's rate allocation once returned a
    16-bit tile of zeros as 32768, half the range."""
    codec = get_codec(name)
    bits = 16 if dtype == np.uint16 else 8
    tile = np.full(shape, value, dtype)
    back = codec.decode(codec.encode(tile, EncodeSettings(quality=85))).reshape(shape)
    assert int(np.abs(back.astype(np.int64) - value).max()) <= (2**bits - 1) // 100
