"""LPIPS and the ResNet18 feature similarity: loading paths, unavailability, and behaviour.

No network weights exist on this machine, so the behaviour tests use weights each test creates
and passes explicitly (as a user passes --lpips-weights / --feature-weights): a seeded random
torchvision AlexNet, and a seeded random ResNet18 saved in the key format of Ciga et al.'s
checkpoint. Nothing here relies on weights appearing behind the caller's back.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from wsitranscode.errors import InvalidInputError
from wsitranscode.quality.perceptual import (
    CIGA_URL,
    FEATURE_DEPTHS,
    FeatureSimilarity,
    Lpips,
    MetricUnavailable,
)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytest.importorskip("lpips")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TISSUE_PNG = SHARED_DATA / "tissue" / "histolab" / "tissue-level0-4302-10273-4814-10785.png"
NOISE_SIGMAS = [0, 4, 12, 36]


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    if not TISSUE_PNG.is_file():
        pytest.skip(f"real tissue tile absent: {TISSUE_PNG} (../shared/data not on this machine)")
    image = imagecodecs.imread(str(TISSUE_PNG))[:, :, :3]
    return [
        np.ascontiguousarray(image[y : y + 224, x : x + 224]) for y in (0, 256) for x in (0, 256)
    ]


def _noisy(tiles: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    rng = np.random.default_rng(int(sigma))
    return [np.clip(t + rng.normal(0, sigma, t.shape), 0, 255).astype(np.uint8) for t in tiles]


def test_feature_similarity_is_one_for_identical_tiles_and_falls_with_noise(
    tiles, ciga_format_weights
):
    metric = FeatureSimilarity.load(ciga_format_weights, allow_download=False, device="cpu")
    assert metric.weights_path == ciga_format_weights
    means = {depth: [] for depth in FEATURE_DEPTHS}
    for sigma in NOISE_SIGMAS:
        result = metric.measure(tiles, _noisy(tiles, sigma) if sigma else [t.copy() for t in tiles])
        assert list(result) == list(FEATURE_DEPTHS)
        for depth, values in result.items():
            assert values.shape == (len(tiles),)
            if sigma == 0:
                np.testing.assert_allclose(values, 1.0, atol=1e-5)
            means[depth].append(float(values.mean()))
    for depth, values in means.items():
        assert all(a > b for a, b in itertools.pairwise(values)), (depth, values)


def test_features_have_the_six_depths_of_the_paper(tiles, ciga_format_weights):
    metric = FeatureSimilarity.load(ciga_format_weights, allow_download=False, device="cpu")
    with torch.inference_mode():
        features = metric.features(tiles[:2])
    shapes = {depth: tuple(value.shape) for depth, value in features.items()}
    assert shapes == {
        "layer1": (2, 64 * 56 * 56),
        "layer2": (2, 128 * 28 * 28),
        "layer3": (2, 256 * 14 * 14),
        "layer4": (2, 512 * 7 * 7),
        "avgpool": (2, 512),
        "fc": (2, 128),
    }


def test_checkpoint_weights_are_the_ones_used(tiles, ciga_format_weights, tmp_path):
    """Two different checkpoints give different features: the file really is loaded."""
    torch.manual_seed(1)
    other = torchvision.models.resnet18(weights=None)
    other_path = tmp_path / "plain_fc.pth"
    torch.save(other.state_dict(), other_path)  # plain torchvision keys, single Linear fc
    first = FeatureSimilarity.load(ciga_format_weights, allow_download=False, device="cpu")
    second = FeatureSimilarity.load(other_path, allow_download=False, device="cpu")
    with torch.inference_mode():
        a = first.features(tiles[:1])["avgpool"]
        b = second.features(tiles[:1])["avgpool"]
    assert not torch.allclose(a, b)
    assert tuple(second.features(tiles[:1])["fc"].shape) == (1, 1000)


def test_lpips_is_zero_for_identical_tiles_and_grows_with_noise(tiles, alexnet_weights):
    metric = Lpips.load(alexnet_weights, allow_download=False, device="cpu")
    means = []
    for sigma in NOISE_SIGMAS:
        values = metric.measure(tiles, _noisy(tiles, sigma) if sigma else [t.copy() for t in tiles])
        assert values.shape == (len(tiles),)
        if sigma == 0:
            assert np.all(values == 0.0)
        means.append(float(values.mean()))
    assert all(a < b for a, b in itertools.pairwise(means)), means


def test_lpips_loads_the_trunk_from_the_weights_file(tiles, alexnet_weights, tmp_path):
    torch.manual_seed(5)
    other_path = tmp_path / "other_alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), other_path)
    noisy = _noisy(tiles, 12)
    first = Lpips.load(alexnet_weights, allow_download=False, device="cpu").measure(tiles, noisy)
    second = Lpips.load(other_path, allow_download=False, device="cpu").measure(tiles, noisy)
    assert not np.allclose(first, second)


@pytest.mark.parametrize("metric_class", [Lpips, FeatureSimilarity])
def test_missing_weights_are_reported_unavailable_with_how_to_provide(metric_class, tmp_path):
    with pytest.raises(MetricUnavailable) as caught:
        metric_class.load(cache_dir=tmp_path, allow_download=False)
    err = caught.value
    assert err.metric == metric_class.name
    assert str(tmp_path) in err.reason
    option = "--lpips-weights" if metric_class is Lpips else "--feature-weights"
    assert option in err.how_to_provide
    assert "TORCH_HOME" in err.how_to_provide
    assert err.reason in str(err)


def test_failed_download_is_reported_unavailable_and_leaves_no_partial_file(tmp_path):
    unreachable = "http://127.0.0.1:9/pytorchnative_tenpercent_resnet18.ckpt"  # discard port
    with pytest.raises(MetricUnavailable, match="could not download"):
        FeatureSimilarity.load(cache_dir=tmp_path, allow_download=True, url=unreachable)
    assert list(tmp_path.iterdir()) == []
    assert CIGA_URL in FeatureSimilarity.how_to_provide


def test_weights_in_the_cache_are_found_without_download(ciga_format_weights, tmp_path):
    cached = tmp_path / CIGA_URL.rsplit("/", 1)[-1]
    cached.write_bytes(ciga_format_weights.read_bytes())
    metric = FeatureSimilarity.load(cache_dir=tmp_path, allow_download=False, device="cpu")
    assert metric.weights_path == cached


def test_bad_weights_files_are_user_errors_naming_the_file(tmp_path, alexnet_weights):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(InvalidInputError, match="weights file not found") as caught:
        FeatureSimilarity.load(missing)
    assert caught.value.path == missing
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InvalidInputError, match="cannot read feature weights") as caught:
        FeatureSimilarity.load(garbage)
    assert str(garbage) in str(caught.value)
    with pytest.raises(InvalidInputError, match="ResNet18 checkpoint"):
        FeatureSimilarity.load(alexnet_weights)  # wrong network
    resnet_path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet_path)
    with pytest.raises(InvalidInputError, match="not torchvision AlexNet weights"):
        Lpips.load(resnet_path)


def test_pairs_must_match(ciga_format_weights, tiles):
    metric = FeatureSimilarity.load(ciga_format_weights, device="cpu")
    with pytest.raises(ValueError, match="original tiles but"):
        metric.measure(tiles, tiles[:1])
