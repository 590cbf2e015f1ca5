"""Where to measure: a tissue mask by thresholding, and seeded random tiles on tissue.

The protocol of the paper: tiles (224 x 224 by default) at the highest magnification, at random
positions on tissue (at least 30 % tissue), not overlapping.

Tissue mask: a pixel is tissue when its HSV saturation, (max - min) / max of R, G, B, lies above a
threshold found by Otsu's method on the saturation histogram (8-bit), clipped to 13..51
(0.05..0.20): stained tissue is coloured and glass is grey or white, so saturation separates
them better than brightness does; the clip keeps Otsu from splitting the noise of an empty image
(lower bound) or the stain shades of an image that is all tissue (upper bound). Pixels darker
than 25 (max of R, G, B) are never tissue: black padding outside the scanned area has noisy
saturation.

The mask is usually computed on a thumbnail (the lowest pyramid level); `sample_tiles` maps it
onto the full image by the ratio of the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SATURATION_THRESHOLD_RANGE = (13, 51)
MIN_TISSUE_BRIGHTNESS = 25
DEFAULT_MIN_TISSUE = 0.3
_CANDIDATES_PER_DRAW = 4096


@dataclass(frozen=True)
class TileSample:
    """A sampled tile: top-left pixel (column x, row y) at full resolution and its tissue share."""

    x: int
    y: int
    tissue_fraction: float


def saturation_u8(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of an HxWx3 uint8 image, as uint8 (0..255)."""
    rgb = np.asarray(rgb)
    high = rgb.max(axis=2).astype(np.uint16)
    low = rgb.min(axis=2).astype(np.uint16)
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = np.where(high > 0, (high - low) * 255 // np.maximum(high, 1), 0)
    return sat.astype(np.uint8)


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 values: values above it are foreground (as scikit-image's)."""
    flat = np.asarray(values, dtype=np.uint8).ravel()
    if flat.size == 0:
        raise ValueError("Otsu's threshold of an empty image is undefined")
    low, high = int(flat.min()), int(flat.max())
    if low == high:
        return low
    hist = np.bincount(flat, minlength=256)[low : high + 1].astype(np.float64)
    centers = np.arange(low, high + 1, dtype=np.float64)
    weight_below = np.cumsum(hist)
    weight_above = np.cumsum(hist[::-1])[::-1]
    mean_below = np.cumsum(hist * centers) / weight_below
    mean_above = (np.cumsum((hist * centers)[::-1]) / weight_above[::-1])[::-1]
    between = weight_below[:-1] * weight_above[1:] * (mean_below[:-1] - mean_above[1:]) ** 2
    return int(centers[int(np.argmax(between))])


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean HxW mask of tissue pixels of an HxWx3 uint8 image (see the module doc)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    sat = saturation_u8(rgb)
    threshold = int(np.clip(otsu_threshold(sat), *SATURATION_THRESHOLD_RANGE))
    return (sat > threshold) & (rgb.max(axis=2) >= MIN_TISSUE_BRIGHTNESS)


def sample_tiles(
    mask: np.ndarray,
    image_size: tuple[int, int],
    tile_size: int,
    count: int,
    seed: int,
    min_tissue: float = DEFAULT_MIN_TISSUE,
    max_attempts: int | None = None,
) -> list[TileSample]:
    """Up to `count` non-overlapping tiles at seeded random positions with enough tissue.

    `mask` covers the whole image (`image_size` = (width, height) in full-resolution pixels) at
    any lower resolution. Candidates are drawn uniformly over all top-left positions; a candidate
    is kept when its tissue fraction (from the mask) is at least `min_tissue` and it overlaps no
    tile kept before. Fewer than `count` come back when the tissue runs out (after
    `max_attempts` candidates, default 200 per wanted tile plus 20,000). Same inputs, same tiles.
    """
    width, height = image_size
    if tile_size <= 0 or count <= 0 or tile_size > width or tile_size > height:
        return []
    coverage = _TissueCoverage(np.asarray(mask, dtype=bool), width, height)
    rng = np.random.default_rng(seed)
    budget = max_attempts if max_attempts is not None else 200 * count + 20_000
    kept: dict[tuple[int, int], TileSample] = {}  # grid cell of size tile_size -> the tile in it
    while budget > 0 and len(kept) < count:
        draw = min(_CANDIDATES_PER_DRAW, budget)
        budget -= draw
        xs = rng.integers(0, width - tile_size + 1, size=draw)
        ys = rng.integers(0, height - tile_size + 1, size=draw)
        fractions = coverage.fractions(xs, ys, tile_size)
        for x, y, fraction in zip(xs.tolist(), ys.tolist(), fractions.tolist(), strict=True):
            if fraction >= min_tissue and not _overlaps(kept, x, y, tile_size):
                kept[(x // tile_size, y // tile_size)] = TileSample(x, y, fraction)
                if len(kept) == count:
                    break
    return list(kept.values())


def _overlaps(kept: dict[tuple[int, int], TileSample], x: int, y: int, size: int) -> bool:
    # Two tiles whose top-left corners share a cell always overlap, so each cell holds at most one
    # tile and only the 3x3 cells around the candidate can hold a tile that overlaps it.
    cell_x, cell_y = x // size, y // size
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            other = kept.get((cell_x + dx, cell_y + dy))
            if other is not None and abs(other.x - x) < size and abs(other.y - y) < size:
                return True
    return False


class _TissueCoverage:
    """Tissue fraction of full-resolution rectangles, from a lower-resolution mask (summed-area)."""

    def __init__(self, mask: np.ndarray, width: int, height: int):
        if mask.ndim != 2 or mask.size == 0:
            raise ValueError(f"expected a non-empty 2-D mask, got shape {mask.shape}")
        self.scale_x = mask.shape[1] / width
        self.scale_y = mask.shape[0] / height
        self.shape = mask.shape
        self.table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
        self.table[1:, 1:] = mask.cumsum(axis=0).cumsum(axis=1)

    def fractions(self, xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray:
        rows, cols = self.shape
        x0 = np.clip(np.floor(xs * self.scale_x).astype(np.int64), 0, cols - 1)
        y0 = np.clip(np.floor(ys * self.scale_y).astype(np.int64), 0, rows - 1)
        x1 = np.clip(np.ceil((xs + size) * self.scale_x).astype(np.int64), x0 + 1, cols)
        y1 = np.clip(np.ceil((ys + size) * self.scale_y).astype(np.int64), y0 + 1, rows)
        t = self.table
        inside = t[y1, x1] - t[y0, x1] - t[y1, x0] + t[y0, x0]
        return inside / ((x1 - x0) * (y1 - y0))
