"""Coding tiles with a loaded model: batching, padding to the stride, devices, model lookup.

Determinism: decoding runs on the CPU unless asked otherwise, in float32, from latents that the
entropy decoder recovers exactly; the probabilities (CDF tables) come from the model file, never
recomputed. On the CPU the synthesis transform gives bit-identical pixels whatever the batch size
and thread count (tested). The analysis transform may run on a GPU: it only chooses the latents,
which the bitstream then fixes. The hyperprior's side path (h_a, its entropy model, h_s, scale
indexes) always runs on the CPU, so encoder and decoder pick the same Gaussian tables.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsitranscode.errors import DecodeError, InvalidInputError, UsageError
from wsitranscode.neural import bitstream, registry
from wsitranscode.neural.modelfile import (
    LoadedModel,
    build_from_state_dict,
    load_file,
    weights_hash,
)

ZOO_ARCHS = {
    "cai": ("bmshj2018-factorized", "mse"),
    "cai-msssim": ("bmshj2018-factorized", "ms-ssim"),
    "cai-hyperprior": ("bmshj2018-hyperprior", "mse"),
}
ZOO_HOW_TO = (
    "CompressAI downloads its pretrained weights on first use (then they are cached in "
    "$TORCH_HOME/hub/checkpoints); without a network, download {url} elsewhere and pass it with "
    "--weights PATH (or put it in that cache folder)"
)

_LOCK = threading.RLock()
_BY_HASH: dict[str, LoadedModel] = {}
_ON_DEVICE: dict[tuple[str, str], torch.nn.Module] = {}
_BARE_HASHES: dict[tuple[str, int, int], str] = {}


def clear_cache() -> None:
    """Forget every loaded model (tests; or after replacing files in WSITRANSCODE_MODELS)."""
    with _LOCK:
        _BY_HASH.clear()
        _ON_DEVICE.clear()
        _BARE_HASHES.clear()


def remember(model: LoadedModel) -> LoadedModel:
    """Make a loaded model findable by its hash (for decoding in this process)."""
    with _LOCK:
        return _BY_HASH.setdefault(model.weights_sha256, model)


def zoo_id(codec: str, quality: int) -> str:
    arch, metric = ZOO_ARCHS[codec]
    return f"compressai/{arch}/{metric}/q{quality}"


def zoo_url(codec: str, quality: int) -> str:
    from compressai.zoo.image import model_urls

    arch, metric = ZOO_ARCHS[codec]
    return model_urls[arch][metric][quality]


def load_zoo(codec: str, quality: int, weights: Path | None = None) -> LoadedModel:
    """CompressAI's pretrained model (its own loader, cached), or the same weights from a file."""
    model_id = zoo_id(codec, quality)
    with _LOCK:
        for model in _BY_HASH.values():
            if model.model_id == model_id and (weights is None or model.source == str(weights)):
                return model
    if weights is not None:
        from compressai.zoo.pretrained import load_pretrained

        from wsitranscode.neural.modelfile import read_state

        state = read_state(weights)
        if str(state.get("format", "")).startswith("wsitranscode"):
            raise UsageError(
                f"--weights {weights} is a model made by `wsitranscode train`, not CompressAI's "
                f"{codec} weights: use --codec neural --model {weights}"
            )
        state = load_pretrained(state.get("state_dict", state))
        _check_zoo_weights(codec, quality, state, weights)
        net, arch = build_from_state_dict(state, weights)
        model = LoadedModel(model_id, arch, net, weights_hash(net.state_dict()), {}, str(weights))
        return remember(model)
    from compressai import zoo

    arch, metric = ZOO_ARCHS[codec]
    loader = (
        zoo.bmshj2018_factorized if arch == "bmshj2018-factorized" else zoo.bmshj2018_hyperprior
    )
    try:
        net = loader(quality=quality, pretrained=True, progress=False, metric=metric)
    except Exception as err:  # URLError, HTTPError, RuntimeError: no network or no such file
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise UsageError(
            f"no weights for {codec} q{quality} ({model_id}): {reason}. "
            + ZOO_HOW_TO.format(url=zoo_url(codec, quality))
        ) from err
    from wsitranscode.neural.modelfile import prepare

    net = prepare(net)
    internal = "factorized" if arch == "bmshj2018-factorized" else "hyperprior"
    model = LoadedModel(
        model_id, internal, net, weights_hash(net.state_dict()), {}, "compressai zoo"
    )
    return remember(model)


def _check_zoo_weights(codec: str, quality: int, state: dict, weights: Path) -> None:
    """Refuse weights that are not what CompressAI's zoo builds for this codec and quality.

    The frames get the zoo's model id (`compressai/<arch>/<metric>/q<quality>`), so the file must
    be that architecture with the zoo's channel counts for that quality.
    """
    from compressai.zoo.image import cfgs

    from wsitranscode.neural import nets

    arch, _ = ZOO_ARCHS[codec]
    expected_arch = "factorized" if arch == "bmshj2018-factorized" else "hyperprior"
    expected = tuple(cfgs[arch][quality])
    try:
        found_arch = nets.infer_arch(state)
        found = nets.infer_shape(found_arch, state)
    except (KeyError, IndexError, AttributeError, TypeError):
        found_arch, found = "unknown", ()
    if found_arch != expected_arch or tuple(found) != expected:
        shape = f"N={found[0]}, M={found[1]}" if len(found) == 2 else "unknown channels"
        raise UsageError(
            f"--weights {weights} is not CompressAI's {arch} at quality {quality} "
            f"({expected_arch}, N={expected[0]}, M={expected[1]}, what --codec {codec} at this "
            f"--q uses) but {found_arch} with {shape}; for a model made by `wsitranscode train` "
            f"use --codec neural --model FILE"
        )


def load_named(name: str) -> LoadedModel:
    """A model from the shipped folder or WSITRANSCODE_MODELS by name (codec `path-<name>`).

    Two models of that name with different weights (a user's model named like a shipped one,
    say) make the name ambiguous: a usage error naming both files, never a silent choice.
    """
    candidates = registry.models_named(name)
    if not candidates:
        raise UsageError(
            f"no model named {name!r}; known: "
            f"{', '.join(m.name for m in registry.list_models())} "
            f"(add folders with {registry.ENV_VAR})"
        )
    if len({info.weights_sha256 for info in candidates}) > 1:
        listed = "; ".join(
            f"{info.path} (sha256:{info.weights_sha256[:12]})" for info in candidates
        )
        raise UsageError(
            f"--codec path-{name} is ambiguous: {len(candidates)} models are named {name}: "
            f"{listed}; use --codec neural --model FILE with the one you mean (or rename one; "
            f"decoding finds either by its weights hash)"
        )
    return load_path(candidates[0].path, name)


def load_path(path: Path | str, name: str | None = None) -> LoadedModel:
    with _LOCK:
        for model in _BY_HASH.values():
            if model.source == str(path):
                return model
    return remember(load_file(path, name))


def find_model(model_id: str, weights_sha256: str) -> LoadedModel:
    """The model a frame was encoded with: by hash among loaded, registered and zoo models."""
    with _LOCK:
        if weights_sha256 in _BY_HASH:
            return _BY_HASH[weights_sha256]
    same_id: list[tuple[str, str]] = []
    for info in registry.all_models():  # every registered model, whatever its name
        if info.weights_sha256 == weights_sha256:
            return load_path(info.path, info.name)
        if info.name == model_id:
            same_id.append((str(info.path), info.weights_sha256))
    for path in registry.bare_weight_files():
        if _bare_hash(path) == weights_sha256:
            return _BY_HASH[weights_sha256]
    zoo = _zoo_codec_and_quality(model_id)
    if zoo is not None:
        try:
            model = load_zoo(*zoo)
        except UsageError as err:
            raise DecodeError(
                f"frame needs {model_id} (weights {weights_sha256[:12]}), not available: "
                f"{err.message}"
            ) from err
        if model.weights_sha256 == weights_sha256:
            return model
        same_id.append((model.source, model.weights_sha256))
    if same_id:
        source, other = same_id[0]
        raise DecodeError(
            f"frame was encoded with model {model_id} weights {weights_sha256[:12]}, but the "
            f"{model_id} available here ({source}) has weights {other[:12]}: refusing to decode "
            f"with another model; put the right weights in a folder listed in {registry.ENV_VAR}"
        )
    raise DecodeError(
        f"frame needs model {model_id} (weights {weights_sha256[:12]}), which is not installed "
        f"here; put its file in a folder listed in {registry.ENV_VAR}"
    )


def _bare_hash(path: Path) -> str | None:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _BARE_HASHES:
        try:
            from compressai.zoo.pretrained import load_pretrained

            from wsitranscode.neural.modelfile import read_state

            state = read_state(path)
            if state.get("format", "").startswith("wsitranscode"):
                model = load_file(path)
            else:
                state = load_pretrained(state.get("state_dict", state))
                net, arch = build_from_state_dict(state, path)
                model = LoadedModel(
                    f"file/{path.name}", arch, net, weights_hash(net.state_dict()), {}, str(path)
                )
        except InvalidInputError:
            _BARE_HASHES[key] = ""
            return None
        remember(model)
        _BARE_HASHES[key] = model.weights_sha256
    return _BARE_HASHES[key] or None


def _zoo_codec_and_quality(model_id: str) -> tuple[str, int] | None:
    parts = model_id.split("/")
    if len(parts) != 4 or parts[0] != "compressai" or not parts[3].startswith("q"):
        return None
    for codec, (arch, metric) in ZOO_ARCHS.items():
        if parts[1] == arch and parts[2] == metric and parts[3][1:].isdigit():
            return codec, int(parts[3][1:])
    return None


# --- devices ----------------------------------------------------------------------------------

# Measured on 2 CPU cores (224x224 tiles, benchmarks/neural_throughput.py): one tile per forward
# pass is fastest on the CPU (larger batches spill the activations out of the caches: a batch of
# 16 decodes up to 1.8x slower per tile); a GPU wants large batches.
CPU_BATCH_SIZE = 1
GPU_BATCH_SIZE = 32


def default_batch_size(device: str | torch.device | None) -> int:
    kind = device.type if isinstance(device, torch.device) else resolve_device(device).type
    return CPU_BATCH_SIZE if kind == "cpu" else GPU_BATCH_SIZE


def resolve_device(device: str | None) -> torch.device:
    name = (device or "cpu").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"unknown device {device!r} (use auto, cpu or cuda)") from err


def _net_on(model: LoadedModel, device: torch.device) -> torch.nn.Module:
    if device.type == "cpu":
        return model.net
    key = (model.weights_sha256, str(device))
    with _LOCK:
        if key not in _ON_DEVICE:
            import copy

            _ON_DEVICE[key] = copy.deepcopy(model.net).to(device).eval()
        return _ON_DEVICE[key]


# --- tensors ----------------------------------------------------------------------------------


def _padding(height: int, width: int, stride: int) -> tuple[int, int]:
    return (-height) % stride, (-width) % stride


def tiles_to_tensor(tiles: Sequence[np.ndarray], stride: int, device: torch.device) -> torch.Tensor:
    """Bx3xHpxWp float in [0, 1], edges replicated up to a multiple of `stride`."""
    batch = torch.from_numpy(np.stack([np.ascontiguousarray(t) for t in tiles]))
    x = batch.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    pad_rows, pad_cols = _padding(x.shape[2], x.shape[3], stride)
    if pad_rows or pad_cols:
        x = F.pad(x, (0, pad_cols, 0, pad_rows), mode="replicate")
    return x


def tensor_to_tiles(x_hat: torch.Tensor, height: int, width: int) -> list[np.ndarray]:
    pixels = x_hat[:, :, :height, :width].clamp(0, 1).mul(255.0).round().to(torch.uint8)
    array = pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return list(array)


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# --- encode / decode --------------------------------------------------------------------------


def check_tile(tile: np.ndarray) -> np.ndarray:
    if tile.ndim != 3 or tile.shape[2] != 3 or tile.dtype != np.uint8:
        raise UsageError(
            f"neural codecs encode 8-bit RGB tiles only, not {tile.dtype} {tile.shape}"
        )
    if max(tile.shape[:2]) > 65535:
        raise UsageError(f"tile {tile.shape[1]}x{tile.shape[0]} is too large for a neural frame")
    return tile


def encode_tiles(
    model: LoadedModel,
    tiles: Sequence[np.ndarray],
    *,
    quality: int = 0,
    device: str | torch.device | None = "cpu",
    batch_size: int | None = None,
) -> list[bytes]:
    """One container per tile (tiles of one shape are batched together)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, tile in enumerate(tiles):
        groups[check_tile(tile).shape].append(index)
    out: list[bytes] = [b""] * len(tiles)
    with torch.inference_mode():
        for (height, width, _), indexes in groups.items():
            pad_rows, pad_cols = _padding(height, width, model.stride)
            for chunk in _chunks(indexes, max(1, batch_size or default_batch_size(dev))):
                x = tiles_to_tensor([tiles[i] for i in chunk], model.stride, dev)
                strings, shape = _compress(model, x)
                for k, index in enumerate(chunk):
                    frame = bitstream.NeuralFrame(
                        model.model_id, model.weights_sha256, quality, height, width,
                        pad_rows, pad_cols, shape, tuple(s[k] for s in strings),
                    )  # fmt: skip
                    out[index] = bitstream.pack(frame)
    return out


def _compress(model: LoadedModel, x: torch.Tensor) -> tuple[list[list[bytes]], tuple[int, int]]:
    net = _net_on(model, x.device)
    if model.arch != "hyperprior":
        result = net.compress(x)
        return result["strings"], tuple(int(v) for v in result["shape"])
    # Side information on the CPU only: encoder and decoder must derive the same scale indexes.
    y = net.g_a(x).to("cpu")
    cpu = model.net
    z = cpu.h_a(torch.abs(y))
    z_strings = cpu.entropy_bottleneck.compress(z)
    z_hat = cpu.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
    indexes = cpu.gaussian_conditional.build_indexes(cpu.h_s(z_hat))
    y_strings = cpu.gaussian_conditional.compress(y, indexes)
    return [y_strings, z_strings], tuple(int(v) for v in z.size()[-2:])


def decode_frames(
    payloads: Sequence[bytes | bytearray | memoryview],
    *,
    device: str | torch.device | None = "cpu",
    batch_size: int | None = None,
) -> list[np.ndarray]:
    """HxWx3 uint8 tiles from containers; frames of one model and shape are decoded in batches."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    frames = [bitstream.unpack(p) for p in payloads]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, frame in enumerate(frames):
        key = (frame.model_id, frame.weights_sha256, frame.padded_shape, frame.latent_shape,
               len(frame.strings))  # fmt: skip
        groups[key].append(index)
    out: list[np.ndarray] = [np.empty(0)] * len(frames)
    with torch.inference_mode():
        for (model_id, digest, _, latent_shape, _), indexes in groups.items():
            model = find_model(model_id, digest)
            for chunk in _chunks(indexes, max(1, batch_size or default_batch_size(dev))):
                strings = [
                    [frames[i].strings[g] for i in chunk]
                    for g in range(len(frames[chunk[0]].strings))
                ]
                x_hat = _decompress(model, strings, latent_shape, dev)
                first = frames[chunk[0]]
                for k, tile in enumerate(tensor_to_tiles(x_hat, first.height, first.width)):
                    out[chunk[k]] = tile
    return out


def _decompress(
    model: LoadedModel, strings: list[list[bytes]], shape: tuple[int, int], device: torch.device
) -> torch.Tensor:
    expected = 2 if model.arch == "hyperprior" else 1
    if len(strings) != expected:
        raise DecodeError(
            f"frame has {len(strings)} entropy-coded strings; "
            f"model {model.model_id} needs {expected}"
        )
    try:
        if model.arch != "hyperprior":
            y_hat = model.net.entropy_bottleneck.decompress(strings[0], shape)
        else:
            cpu = model.net
            z_hat = cpu.entropy_bottleneck.decompress(strings[1], shape)
            indexes = cpu.gaussian_conditional.build_indexes(cpu.h_s(z_hat))
            y_hat = cpu.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype)
    except (RuntimeError, ValueError, IndexError) as err:
        raise DecodeError(f"neural frame does not entropy-decode: {err}") from err
    return _net_on(model, device).g_s(y_hat.to(device))
