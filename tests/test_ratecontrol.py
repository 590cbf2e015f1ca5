"""Target-bitrate quality search (`wsitranscode.ratecontrol`) on real tissue and real codecs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TCGA_SVS, WsiFactory
from wsitranscode import synth
from wsitranscode.codecs.base import EncodeSettings, get_codec
from wsitranscode.dicom.scan import scan
from wsitranscode.errors import UsageError
from wsitranscode.ratecontrol import (
    DEFAULT_SAMPLE_FRAMES,
    choose_quality,
    choose_quality_per_tile,
    decode_frames,
    sample_tissue_tiles_from_series,
    systematic_sample,
    tiles_bpp,
    tissue_frames,
)

# 4096 x 3072 px of the TCGA slide: 16 x 12 frames of 256 at level 0, about 150 of them tissue.
LARGE_REGION = (0, 400, 4096, 3072)


@pytest.fixture(scope="module")
def real_slide(shared_data: Path, wsi_factory: WsiFactory) -> Path:
    """A 3-level VL WSI pyramid (JPEG baseline frames, as scanners write) of real TCGA tissue."""
    if not TCGA_SVS.is_file():
        pytest.skip(f"the real tissue slide {TCGA_SVS} is absent")
    image = synth.load_tissue(TCGA_SVS, region=LARGE_REGION)
    return wsi_factory(
        "ratecontrol-slide",
        image=image,
        tile_size=256,
        levels=3,
        transfer_syntax=synth.JPEG_BASELINE,
    )


@pytest.fixture(scope="module")
def tissue_tiles(real_slide: Path) -> list[np.ndarray]:
    return decode_frames(tissue_frames(real_slide))


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize(("codec_name", "target"), [("jxl", 0.5), ("webp", 0.5), ("webp", 1.0)])
def test_chosen_quality_hits_the_target_over_all_tissue_frames(
    real_slide: Path, tissue_tiles: list[np.ndarray], codec_name: str, target: float
) -> None:
    codec = get_codec(codec_name)
    sample = sample_tissue_tiles_from_series(real_slide, DEFAULT_SAMPLE_FRAMES, seed=0)
    assert len(sample) == DEFAULT_SAMPLE_FRAMES < len(tissue_tiles) / 2

    choice = choose_quality(codec, sample, target, EncodeSettings(), workers=2)

    achieved = tiles_bpp(codec, tissue_tiles, EncodeSettings(quality=choice.quality), workers=2)
    assert abs(achieved - target) / target <= 0.05, (choice, achieved)
    assert choice.within_tolerance
    assert 0 < choice.quality < 100
    assert len(choice.evaluations) <= 10


@pytest.mark.shared_data
def test_search_finds_the_best_quality_a_full_sweep_finds(tissue_tiles: list[np.ndarray]) -> None:
    codec = get_codec("jpeg")
    sample = tissue_tiles[::4]
    sweep = {q: tiles_bpp(codec, sample, EncodeSettings(quality=q)) for q in range(101)}
    for target in (0.3, 0.7, 1.5, 3.0):
        best_error = min(abs(b - target) for b in sweep.values())
        choice = choose_quality(codec, sample, target, EncodeSettings())
        assert abs(choice.achieved_bpp - target) <= best_error + 0.01 * target
        assert choice.achieved_bpp == pytest.approx(sweep[choice.quality])
        measured = dict(choice.evaluations)
        assert min(measured.values(), key=lambda b: abs(b - target)) == choice.achieved_bpp


@pytest.mark.shared_data
def test_unreachable_targets_name_the_reachable_range(tissue_tiles: list[np.ndarray]) -> None:
    codec = get_codec("webp")
    sample = tissue_tiles[:4]
    for target in (0.001, 40.0):
        with pytest.raises(UsageError, match=r"out of reach.*reachable [0-9.]+ \(q0\) to"):
            choose_quality(codec, sample, target, EncodeSettings())


def test_settings_without_a_quality_knob_are_refused(tissue_image: np.ndarray) -> None:
    tile = np.ascontiguousarray(tissue_image[:256, :256])
    with pytest.raises(UsageError, match="lossless"):
        choose_quality(get_codec("jxl"), [tile], 0.5, EncodeSettings(lossless=True))
    with pytest.raises(UsageError, match="no quality setting"):
        choose_quality(get_codec("jxl-recompress"), [tile], 0.5, EncodeSettings())
    with pytest.raises(UsageError, match="positive"):
        choose_quality(get_codec("jpeg"), [tile], 0.0, EncodeSettings())
    with pytest.raises(UsageError, match="no tissue tiles"):
        choose_quality(get_codec("jpeg"), [], 0.5, EncodeSettings())


def test_per_tile_search_hits_a_reachable_target_and_clamps_glass(
    tissue_image: np.ndarray,
) -> None:
    codec = get_codec("webp")
    tile = np.ascontiguousarray(tissue_image[:256, 256:512])
    choice = choose_quality_per_tile(codec, tile, 0.8, EncodeSettings())
    assert not choice.clamped
    # One tile's bpp moves in steps between integer qualities: the best any q does is the bar.
    sweep = [tiles_bpp(codec, [tile], EncodeSettings(quality=q)) for q in range(0, 101, 2)]
    best_error = min(abs(b - 0.8) for b in sweep)
    assert abs(choice.achieved_bpp - 0.8) <= best_error + 0.01 * 0.8
    assert abs(choice.achieved_bpp - 0.8) / 0.8 <= 0.1
    assert tiles_bpp(codec, [tile], EncodeSettings(quality=choice.quality)) == pytest.approx(
        choice.achieved_bpp
    )
    assert choice.encoded == codec.encode(tile, EncodeSettings(quality=choice.quality))

    glass = np.full((256, 256, 3), 243, dtype=np.uint8)
    clamped = choose_quality_per_tile(codec, glass, 2.0, EncodeSettings())
    assert clamped.clamped and clamped.quality == 100
    assert clamped.achieved_bpp < 2.0 and not clamped.within_tolerance


def test_sample_is_seeded_frame_aligned_and_skips_glass(wsi_factory: WsiFactory) -> None:
    folder = wsi_factory("ratecontrol-small", tile_size=256, levels=2)
    frames = tissue_frames(folder)
    level0 = scan(folder).series[0].levels()[0]
    assert 0 < len(frames) <= level0.number_of_frames
    assert all(f.tissue_fraction >= 0.3 for f in frames)

    first = sample_tissue_tiles_from_series(folder, 3, seed=5)
    again = sample_tissue_tiles_from_series(scan(folder).series[0], 3, seed=5)
    assert len(first) == 3
    assert all(a.shape == (256, 256, 3) for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))

    regions = sample_tissue_tiles_from_series(level0.instances[0].path, 2, tile_size=128, seed=1)
    assert [r.shape for r in regions] == [(128, 128, 3)] * 2


def test_systematic_sample_spreads_over_the_population() -> None:
    picks = systematic_sample(100, 10, seed=3)
    assert len(picks) == 10 == len(set(picks))
    assert all(10 * i <= p < 10 * (i + 1) for i, p in enumerate(picks))
    assert systematic_sample(5, 10, seed=0) == [0, 1, 2, 3, 4]
    assert systematic_sample(100, 10, seed=3) == picks


def test_a_search_can_be_stopped_between_qualities(tissue_tiles: list[np.ndarray]) -> None:
    """recode passes its Ctrl-C check: the search stops before the next encode, not at its end."""
    tried = []

    class Stop(Exception):
        pass

    def stop_after_two() -> None:
        tried.append(1)
        if len(tried) > 2:
            raise Stop

    with pytest.raises(Stop):
        choose_quality(get_codec("jpeg"), tissue_tiles, 1.0, EncodeSettings(),
                       before_each=stop_after_two)  # fmt: skip
    assert len(tried) == 3
