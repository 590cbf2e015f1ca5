"""Learned metrics on 8-bit RGB tiles: LPIPS and the paper's task-agnostic feature similarity.

Both need network weights. They are found, in this order: an explicit file (`--lpips-weights`,
`--feature-weights`), the cache (torch hub's `checkpoints` folder, so `TORCH_HOME` applies), a
one-time download into that cache. When none works the metric raises `MetricUnavailable` with
the reason and how to provide the weights: it is never computed with random weights.

- LPIPS (Zhang et al. 2018) with the `lpips` package: AlexNet trunk with torchvision's ImageNet
  weights (`alexnet-owt-7be5be79.pth`), the package's own v0.1 linear heads, inputs scaled to
  [-1, 1].
- Feature similarity (Fischer et al. 2024): cosine similarity between the flattened features of
  the original and the recoded tile at six depths of the self-supervised histopathology ResNet18
  of Ciga et al. 2022 (SimCLR, `pytorchnative_tenpercent_resnet18.ckpt`): after conv1 + layer1,
  layer2, layer3, layer4, the average pool, and the final fully connected layer of the
  checkpoint's projection head. Inputs are scaled to [-1, 1] (mean 0.5, std 0.5 per channel).

torch and lpips are imported inside the functions that need them: importing this module is cheap.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsitranscode.errors import InvalidInputError
from wsitranscode.quality.metrics import to_rgb8

if TYPE_CHECKING:
    import torch

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_HASH_PREFIX = "7be5be79"  # torchvision names its files after their SHA-256 prefix
CIGA_URL = (
    "https://github.com/ozanciga/self-supervised-histopathology/releases/download/"
    "nativetenpercent/pytorchnative_tenpercent_resnet18.ckpt"
)
FEATURE_DEPTHS = ("layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
_CHECKPOINT_PREFIXES = ("model.resnet.", "module.", "model.", "resnet.")


class MetricUnavailable(Exception):
    """A metric cannot be computed here; `reason` says why and `how_to_provide` what to do."""

    def __init__(self, metric: str, reason: str, how_to_provide: str):
        self.metric = metric
        self.reason = reason
        self.how_to_provide = how_to_provide
        super().__init__(f"{metric} unavailable: {reason}. {how_to_provide}")


def default_cache_dir() -> Path:
    """torch hub's checkpoint folder, `$TORCH_HOME/hub/checkpoints`, where torchvision looks."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def select_device(device: str | None = None) -> torch.device:
    """The given device, else the first CUDA GPU when there is one, else the CPU."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_weights(
    explicit: Path | str | None,
    *,
    metric: str,
    url: str,
    cache_dir: Path | str | None,
    allow_download: bool,
    how_to_provide: str,
    hash_prefix: str | None = None,
) -> Path:
    """The weights file to load: the explicit one, the cached one, or a fresh download."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise InvalidInputError(f"{metric} weights file not found", path=path)
        return path
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache / url.rsplit("/", 1)[-1]
    if cached.is_file():
        return cached
    if not allow_download:
        raise MetricUnavailable(
            metric,
            f"no weights in the cache ({cached}) and downloading is turned off",
            how_to_provide,
        )
    _download(url, cached, metric=metric, how_to_provide=how_to_provide, hash_prefix=hash_prefix)
    return cached


def _download(url: str, target: Path, *, metric: str, how_to_provide: str, hash_prefix: str | None):
    import torch

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".partial")
        os.close(handle)
        try:
            torch.hub.download_url_to_file(url, partial, hash_prefix=hash_prefix, progress=False)
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
        reason = " ".join(str(err).split()) or type(err).__name__
        raise MetricUnavailable(
            metric, f"could not download {url} ({reason})", how_to_provide
        ) from err


def _load_state_dict(path: Path, metric: str) -> dict[str, Any]:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's unpickler raises many kinds on a malformed file
        raise InvalidInputError(
            f"cannot read {metric} weights ({' '.join(str(err).split())[:200]}); expected a "
            "PyTorch state dict saved with torch.save (for the feature metric: "
            "pytorchnative_tenpercent_resnet18.ckpt, not the Lightning checkpoint)",
            path=path,
        ) from err
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise InvalidInputError(f"{metric} weights are not a state dict", path=path)
    return loaded


def _tiles_to_tensor(tiles: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Nx3xHxW float tensor in [-1, 1] from 8-bit tiles of one shape."""
    import torch

    batch = np.stack([to_rgb8(tile) for tile in tiles])
    tensor = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float()
    return tensor / 127.5 - 1.0


def _batches(count: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def _check_pairs(originals: Sequence[np.ndarray], recoded: Sequence[np.ndarray]) -> None:
    if len(originals) != len(recoded):
        raise ValueError(f"{len(originals)} original tiles but {len(recoded)} recoded tiles")
    shapes = {np.shape(tile) for tile in [*originals, *recoded]}
    if len(shapes) > 1:
        raise ValueError(f"tiles in one call must share one shape, got {sorted(shapes)}")


def _how_to_provide(url: str, option: str) -> str:
    return (
        f"Download {url} once and pass it with {option} PATH, or put it in "
        "$TORCH_HOME/hub/checkpoints/ (default ~/.cache/torch/hub/checkpoints/)"
    )


class _NetworkMetric:
    """A metric computed by a network whose weights come from a file, a cache or a download."""

    name = ""
    url = ""
    hash_prefix: str | None = None
    how_to_provide = ""

    def __init__(self, model: Any, device: torch.device, weights_path: Path):
        self.model = model
        self.device = device
        self.weights_path = weights_path

    @classmethod
    def load(
        cls,
        weights: Path | str | None = None,
        *,
        allow_download: bool = True,
        cache_dir: Path | str | None = None,
        device: str | None = None,
        url: str | None = None,
    ) -> Any:
        """Find the weights (or raise MetricUnavailable saying how to provide them) and build."""
        path = resolve_weights(
            weights,
            metric=cls.name,
            url=url or cls.url,
            cache_dir=cache_dir,
            allow_download=allow_download,
            how_to_provide=cls.how_to_provide,
            hash_prefix=cls.hash_prefix if url in (None, cls.url) else None,
        )
        return cls(cls.build(path), select_device(device), path)

    @staticmethod
    def build(path: Path) -> Any:
        raise NotImplementedError


class Lpips(_NetworkMetric):
    """LPIPS (AlexNet, v0.1 linear heads of the `lpips` package): 0 for identical tiles."""

    name = "lpips"
    url = ALEXNET_URL
    hash_prefix = ALEXNET_HASH_PREFIX
    how_to_provide = _how_to_provide(ALEXNET_URL, "--lpips-weights")

    @staticmethod
    def build(path: Path) -> Any:
        return _build_lpips(path)

    def measure(
        self, originals: Sequence[np.ndarray], recoded: Sequence[np.ndarray], batch_size: int = 32
    ) -> np.ndarray:
        """LPIPS distance per tile pair (float64 array, one value per pair)."""
        import torch

        _check_pairs(originals, recoded)
        self.model.to(self.device)
        results = []
        with torch.inference_mode():
            for part in _batches(len(originals), batch_size):
                a = _tiles_to_tensor(originals[part], self.device)
                b = _tiles_to_tensor(recoded[part], self.device)
                results.append(self.model(a, b, normalize=False).flatten().double().cpu().numpy())
        return np.concatenate(results) if results else np.zeros(0)


def _build_lpips(path: Path) -> Any:
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's 'pretrained' deprecation
        # pnet_rand=True: lpips must not fetch the trunk itself; we load it from `path` below.
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    state = _load_state_dict(path, Lpips.name)
    trunk: dict[str, Any] = {}
    for name, param in model.net.named_parameters():  # e.g. slice2.3.weight
        _, index, kind = name.split(".")
        key = f"features.{index}.{kind}"
        if key not in state or tuple(state[key].shape) != tuple(param.shape):
            raise InvalidInputError(
                f"not torchvision AlexNet weights: {key} missing or of the wrong shape", path=path
            )
        trunk[name] = state[key]
    model.net.load_state_dict(trunk)
    return model.eval()


class FeatureSimilarity(_NetworkMetric):
    """Cosine similarity of ResNet18 features (Ciga et al. 2022) at six depths: 1 when identical."""

    name = "feature"
    url = CIGA_URL
    depths = FEATURE_DEPTHS
    how_to_provide = _how_to_provide(CIGA_URL, "--feature-weights")

    @staticmethod
    def build(path: Path) -> Any:
        return build_ciga_resnet18(path)

    def features(self, tiles: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Flattened features (N x D) at each depth for one batch of same-shape tiles."""
        model = self.model
        x = _tiles_to_tensor(tiles, self.device)
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        out = {}
        x = out["layer1"] = model.layer1(x)
        x = out["layer2"] = model.layer2(x)
        x = out["layer3"] = model.layer3(x)
        x = out["layer4"] = model.layer4(x)
        x = out["avgpool"] = model.avgpool(x).flatten(1)
        out["fc"] = model.fc(x)
        return {depth: value.flatten(1) for depth, value in out.items()}

    def measure(
        self, originals: Sequence[np.ndarray], recoded: Sequence[np.ndarray], batch_size: int = 32
    ) -> dict[str, np.ndarray]:
        """Cosine similarity per tile pair at each depth: {depth: float64 array}."""
        import torch
        import torch.nn.functional as F

        _check_pairs(originals, recoded)
        self.model.to(self.device)
        results: dict[str, list[np.ndarray]] = {depth: [] for depth in self.depths}
        with torch.inference_mode():
            for part in _batches(len(originals), batch_size):
                feats_a = self.features(originals[part])
                feats_b = self.features(recoded[part])
                for depth in self.depths:
                    cosine = F.cosine_similarity(feats_a[depth], feats_b[depth], dim=1)
                    results[depth].append(cosine.double().cpu().numpy())
        return {
            depth: np.concatenate(parts) if parts else np.zeros(0)
            for depth, parts in results.items()
        }


def build_ciga_resnet18(path: Path) -> Any:
    """torchvision ResNet18 with the backbone and projection head of a Ciga et al. checkpoint.

    The checkpoint's keys carry the prefix `model.resnet.`; its `fc` is the SimCLR projection head
    (`fc.1` Linear, `fc.3` Linear, with parameterless modules at 0 and 2, identity and ReLU at
    inference). A checkpoint with a plain `fc.weight`/`fc.bias` keeps a single Linear layer.
    """
    import torch
    import torchvision

    state = {_strip_prefix(key): value for key, value in _load_state_dict(path, "feature").items()}
    model = torchvision.models.resnet18(weights=None)
    model.fc = _projection_head(state, path)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    wrong_shape = [
        key for key in expected if key in state and tuple(state[key].shape) != expected[key].shape
    ]
    if missing or wrong_shape:
        example = (missing or wrong_shape)[0]
        raise InvalidInputError(
            f"not a ResNet18 checkpoint of Ciga et al.: {len(missing)} parameters missing and "
            f"{len(wrong_shape)} of the wrong shape (e.g. {example})",
            path=path,
        )
    model.load_state_dict({key: torch.as_tensor(state[key]) for key in expected})
    return model.eval()


def _strip_prefix(key: str) -> str:
    for prefix in _CHECKPOINT_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _projection_head(state: dict[str, Any], path: Path) -> Any:
    from torch import nn

    if "fc.1.weight" in state and "fc.3.weight" in state:
        hidden_out, hidden_in = state["fc.1.weight"].shape
        out, _ = state["fc.3.weight"].shape
        return nn.Sequential(
            nn.Identity(), nn.Linear(hidden_in, hidden_out), nn.ReLU(), nn.Linear(hidden_out, out)
        )
    if "fc.weight" in state:
        out, inp = state["fc.weight"].shape
        return nn.Linear(inp, out)
    raise InvalidInputError(
        "ResNet18 checkpoint has no fully connected layer (fc.weight or fc.1/fc.3)", path=path
    )
