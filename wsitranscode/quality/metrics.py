"""Full-reference image metrics: PSNR and the maximum absolute error at the samples' own bit
depth, SSIM and MS-SSIM on 8-bit RGB (numpy and scipy only).

Definitions, chosen so that results can be checked against the usual references:

- PSNR: 10 log10(peak^2 / MSE) with the MSE over all pixels and samples and peak
  2^BitsStored - 1 (255 for 8-bit tiles: scikit-image's `peak_signal_noise_ratio(...,
  data_range=255)`); identical tiles give `math.inf`. The samples are compared as they are: a
  16-bit tile is never reduced to 8 bits first (that would hide every error below 256).
- Maximum absolute error: the largest |original - recoded| over all samples, in sample units.
  On high-bit-depth data that uses little of its range (values 0..24 in 16 bits, say) PSNR at
  the full peak stays high whatever the loss; the maximum error shows it.
- SSIM: Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), K1 0.01, K2 0.03, population
  (not sample) covariance, averaged over the window positions that lie entirely inside the tile
  and then over the channels. This is scikit-image's `structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
  channel_axis=-1)` and pytorch-msssim's `ssim(..., data_range=255)`.
- MS-SSIM: Wang et al. 2003 as implemented by pytorch-msssim's `ms_ssim`: five scales with the
  weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333; between scales a 2x2 average pool (odd sides
  zero-padded on both sides, padding counted); contrast-structure terms clipped at 0; the product
  is taken per channel, then averaged over channels.

SSIM and MS-SSIM (and the learned metrics of `perceptual`) need 8-bit RGB: other tiles are
reduced by `to_rgb8` first, and callers must say so where they report them.

Tiles too small for a definition are not measured with a changed definition: `ssim` needs both
sides >= 11 px and `ms_ssim` needs both sides >= 161 px (the fifth scale must still hold the
11 px window; pytorch-msssim asserts the same). Smaller tiles raise `MetricNotApplicable`, which
reports carry as "not measured" with that reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate1d

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1 = 0.01
K2 = 0.03
DATA_RANGE = 255.0
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_MIN_SIDE = WINDOW_SIZE
MS_SSIM_MIN_SIDE = (WINDOW_SIZE - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1  # 161


class MetricNotApplicable(ValueError):
    """The metric is not defined for this input (a tile too small, say); `str()` says why."""


def to_rgb8(tile: np.ndarray, bits_stored: int | None = None) -> np.ndarray:
    """HxWx3 uint8 from an HxW, HxWx1 or HxWx3 tile of uint8 or uint16 samples.

    Monochrome is repeated into three channels; samples with more than 8 bits stored are shifted
    down to their 8 most significant bits (`bits_stored` defaults to the dtype's width).
    """
    array = np.asarray(tile)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"expected an HxW, HxWx1 or HxWx3 tile, got shape {array.shape}")
    if array.dtype != np.uint8:
        if array.dtype.kind not in "ui":
            raise ValueError(f"expected integer samples, got {array.dtype}")
        bits = bits_stored or array.dtype.itemsize * 8
        array = (array.astype(np.uint32) >> max(bits - 8, 0)).clip(0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def sample_peak(bits_stored: int) -> float:
    """The largest value of an unsigned sample with `bits_stored` bits: 2^bits_stored - 1."""
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits stored must lie in 1..16, got {bits_stored}")
    return float((1 << bits_stored) - 1)


def psnr(original: np.ndarray, recoded: np.ndarray, bits_stored: int = 8) -> float:
    """Peak signal-to-noise ratio in dB at the samples' own depth; `math.inf` when identical.

    The peak is 2^bits_stored - 1 (255 by default). Samples are compared unreduced; an original
    sample above the peak is a ValueError (a 16-bit tile measured as if it were 8-bit, say).
    """
    a, b = _as_sample_pair(original, recoded)
    return _psnr_of(a, np.subtract(a, b, dtype=np.int64), bits_stored)


def _psnr_of(original: np.ndarray, diff: np.ndarray, bits_stored: int) -> float:
    peak = sample_peak(bits_stored)
    if original.max(initial=0) > peak:
        raise ValueError(
            f"original samples exceed {peak:.0f}, the peak of {bits_stored} bits stored"
        )
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    if mse == 0:
        return math.inf
    return float(10.0 * math.log10(peak**2 / mse))


def max_abs_error(original: np.ndarray, recoded: np.ndarray) -> int:
    """The largest |original - recoded| over all samples, in sample units (0 when identical)."""
    a, b = _as_sample_pair(original, recoded)
    if a.size == 0:
        return 0
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


@dataclass(frozen=True)
class Fidelity:
    """How far a decoded tile is from its original, at the original's bit depth."""

    exact: bool  # every sample equal
    psnr: float  # dB with peak 2^bits_stored - 1; math.inf when exact
    max_abs_error: int  # in sample units
    bits_stored: int


def fidelity(original: np.ndarray, recoded: np.ndarray, bits_stored: int) -> Fidelity:
    """Exactness, PSNR and maximum absolute error of two tiles, never reduced to 8 bits."""
    a, b = _as_sample_pair(original, recoded)
    diff = np.subtract(a, b, dtype=np.int64)  # once, for both measures
    error = int(np.abs(diff).max()) if diff.size else 0
    value = math.inf if error == 0 else _psnr_of(a, diff, bits_stored)
    return Fidelity(error == 0, value, error, bits_stored)


def _as_sample_pair(original: np.ndarray, recoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both tiles as HxWxS arrays of their own samples (HxW becomes HxWx1); shapes must agree."""
    a, b = _with_sample_axis(original), _with_sample_axis(recoded)
    if a.shape != b.shape:
        raise ValueError(f"tiles differ in shape: {a.shape} and {b.shape}")
    return a, b


def _with_sample_axis(tile: np.ndarray) -> np.ndarray:
    array = np.asarray(tile)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3 or array.dtype.kind not in "ui":
        raise ValueError(
            f"expected an HxW or HxWxS tile of integers, got {array.shape} {array.dtype}"
        )
    return array


def ssim(original: np.ndarray, recoded: np.ndarray) -> float:
    """Mean structural similarity of two 8-bit tiles (Gaussian window, see module doc)."""
    a, b = _as_float_pair(original, recoded)
    _require_min_side(a, SSIM_MIN_SIDE, "SSIM")
    ssim_per_channel, _ = _ssim_and_contrast_structure(a, b)
    return float(ssim_per_channel.mean())


def ms_ssim(original: np.ndarray, recoded: np.ndarray) -> float:
    """Five-scale MS-SSIM of two 8-bit tiles, as pytorch-msssim's `ms_ssim` (see module doc)."""
    a, b = _as_float_pair(original, recoded)
    _require_min_side(a, MS_SSIM_MIN_SIDE, "five-scale MS-SSIM")
    weights = np.asarray(MS_SSIM_WEIGHTS)
    contrast_structure = []
    for scale in range(len(weights)):
        ssim_per_channel, cs_per_channel = _ssim_and_contrast_structure(a, b)
        if scale < len(weights) - 1:
            contrast_structure.append(np.maximum(cs_per_channel, 0.0))
            a, b = _average_pool_2x2(a), _average_pool_2x2(b)
    terms = np.stack([*contrast_structure, np.maximum(ssim_per_channel, 0.0)])  # (scale, channel)
    per_channel = np.prod(terms ** weights[:, np.newaxis], axis=0)
    return float(per_channel.mean())


def _as_float_pair(original: np.ndarray, recoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_rgb8(original), to_rgb8(recoded)
    if a.shape != b.shape:
        raise ValueError(f"tiles differ in shape: {a.shape} and {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def _require_min_side(tile: np.ndarray, min_side: int, name: str) -> None:
    height, width = tile.shape[:2]
    if min(height, width) < min_side:
        raise MetricNotApplicable(
            f"tile {width}x{height} is smaller than {name}'s minimum of {min_side} px per side"
        )


def _gaussian_window() -> np.ndarray:
    coords = np.arange(WINDOW_SIZE, dtype=np.float64) - WINDOW_SIZE // 2
    window = np.exp(-(coords**2) / (2 * WINDOW_SIGMA**2))
    return window / window.sum()


def _filter_valid(stack: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local means over the window positions inside the tile (axes 1 and 2)."""
    window = _gaussian_window()
    radius = WINDOW_SIZE // 2
    out = correlate1d(stack, window, axis=1, mode="constant")
    out = correlate1d(out, window, axis=2, mode="constant")
    return out[:, radius : stack.shape[1] - radius, radius : stack.shape[2] - radius]


def _ssim_and_contrast_structure(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel means of the SSIM map and of its contrast-structure factor."""
    c1 = (K1 * DATA_RANGE) ** 2
    c2 = (K2 * DATA_RANGE) ** 2
    mu_a, mu_b, mean_aa, mean_bb, mean_ab = _filter_valid(np.stack([a, b, a * a, b * b, a * b]))
    var_a = mean_aa - mu_a**2
    var_b = mean_bb - mu_b**2
    cov_ab = mean_ab - mu_a * mu_b
    cs_map = (2 * cov_ab + c2) / (var_a + var_b + c2)
    ssim_map = ((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)) * cs_map
    return ssim_map.mean(axis=(0, 1)), cs_map.mean(axis=(0, 1))


def _average_pool_2x2(tile: np.ndarray) -> np.ndarray:
    """torch's avg_pool2d(kernel 2, padding = side % 2), zero padding counted in the mean."""
    height, width = tile.shape[:2]
    pad_h, pad_w = height % 2, width % 2
    padded = np.pad(tile, ((pad_h, pad_h), (pad_w, pad_w), (0, 0)))
    out_h = (height + 2 * pad_h - 2) // 2 + 1
    out_w = (width + 2 * pad_w - 2) // 2 + 1
    cropped = padded[: 2 * out_h, : 2 * out_w]
    return cropped.reshape(out_h, 2, out_w, 2, -1).mean(axis=(1, 3))
