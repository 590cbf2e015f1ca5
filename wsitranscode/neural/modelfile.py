"""Model files: our own (`.pt` + `.json` sidecar) and CompressAI weights; the weights hash.

A wsitranscode model file is `torch.save({"format": FORMAT, "meta": {...}, "state_dict": {...}})`
read back with `torch.load(weights_only=True)` (no pickled code runs). Floating-point weights may
be stored in float16 to keep files small; they are widened to float32 on load. The entropy
models' CDF tables (CompressAI's `update()`) are part of the state dict, so the probabilities an
encoder used travel with the weights and are never recomputed on another machine.

The weights hash (`weights_sha256`) is SHA-256 over the state dict as the codec uses it (float32,
CDF tables included), key by key in sorted order: name, dtype, shape, raw little-endian bytes.
Every bitstream carries it; a decoder refuses weights with another hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsitranscode.errors import InvalidInputError
from wsitranscode.neural import nets

FORMAT = "wsitranscode-neural-model/1"


@dataclass
class LoadedModel:
    """A network ready to code: eval mode, float32, on the CPU, entropy tables built."""

    model_id: str
    arch: str
    net: nn.Module
    weights_sha256: str
    meta: dict[str, Any]
    source: str  # where it came from (a path, or "compressai zoo")

    @property
    def stride(self) -> int:
        return nets.stride_of(self.arch)

    @property
    def short_hash(self) -> str:
        return self.weights_sha256[:12]


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def prepare(net: nn.Module) -> nn.Module:
    """Eval mode, float32 on the CPU, entropy tables present (computed only when missing)."""
    net = net.float().to("cpu").eval()
    net.update(force=False)
    return net


def build_from_state_dict(
    state_dict: dict[str, torch.Tensor], path: Path | str, arch: str | None = None
) -> tuple[nn.Module, str]:
    """The network a (CompressAI or wsitranscode) state dict describes, loaded and prepared."""
    arch = arch or nets.infer_arch(state_dict)
    try:
        n, m = nets.infer_shape(arch, state_dict)
        net = nets.build(arch, n, m)
        widened = {k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}
        net.load_state_dict(widened)  # CompressAI resizes the CDF buffers to what it loads
    except (KeyError, RuntimeError, ValueError) as err:
        raise InvalidInputError(
            f"not {arch} weights: {' '.join(str(err).split())[:200]}", path=path
        ) from err
    return prepare(net), arch


def read_state(path: Path | str) -> dict[str, Any]:
    """torch.load a weights file safely; our format or a bare (CompressAI) state dict."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError("model weights file not found", path=path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's unpickler raises many kinds on a malformed file
        raise InvalidInputError(_not_a_model_file(err), path=path) from err
    if not isinstance(loaded, dict):
        raise InvalidInputError("model weights are not a state dict", path=path)
    return loaded


def _not_a_model_file(err: Exception) -> str:
    """One line for a file torch.load refuses (its own message is a long paragraph)."""
    if "Unsupported global" in str(err):
        return (
            "not a model file: it holds pickled Python objects (a whole pickled model?), which "
            "are never loaded (they could run code); save the network's state_dict() instead"
        )
    return (
        "not a model file (expected weights saved with torch.save: a .pt from `wsitranscode "
        "train`, or CompressAI weights)"
    )


def load_file(path: Path | str, model_id: str | None = None) -> LoadedModel:
    """Load one of our model files, or a bare CompressAI state dict (`--weights PATH`)."""
    path = Path(path)
    loaded = read_state(path)
    if loaded.get("format") == FORMAT:
        meta = dict(loaded.get("meta") or {})
        net, arch = build_from_state_dict(loaded["state_dict"], path, meta.get("arch"))
        digest = weights_hash(net.state_dict())
        recorded = meta.get("weights_sha256")
        if recorded and recorded != digest:
            raise InvalidInputError(
                f"model weights hash {digest[:12]} differs from the one recorded in the file "
                f"({recorded[:12]}): the file is damaged",
                path=path,
            )
        return LoadedModel(
            model_id or meta.get("id") or path.stem, arch, net, digest, meta, str(path)
        )
    state = loaded.get("state_dict", loaded)
    if not isinstance(state, dict):
        raise InvalidInputError("model weights are not a state dict", path=path)
    net, arch = build_from_state_dict(state, path)
    digest = weights_hash(net.state_dict())
    meta = {"arch": arch, "weights_sha256": digest}
    return LoadedModel(model_id or f"file/{path.name}", arch, net, digest, meta, str(path))


def settle_quantiles(net: nn.Module) -> float:
    """Set the entropy bottlenecks' quantiles to where CompressAI's auxiliary loss is zero.

    The quantiles bound the CDF tables the range coder uses; they depend only on the learned
    densities, not on data. Training moves them slowly (CompressAI: Adam at 1e-3 over hundreds
    of thousands of steps), so a short run leaves them far off and the tables too wide, which
    costs real bits. The learned cumulative density is monotone, so each quantile is found by
    bisection instead. Returns the auxiliary loss afterwards (about 0).
    """
    from compressai.entropy_models import EntropyBottleneck

    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, EntropyBottleneck):
                target = module.target.to(module.quantiles)
                low = torch.full_like(module.quantiles, -1e6)
                high = torch.full_like(module.quantiles, 1e6)
                for _ in range(64):
                    middle = (low + high) / 2
                    below = module._logits_cumulative(middle, stop_gradient=True) < target
                    low = torch.where(below, middle, low)
                    high = torch.where(below, high, middle)
                module.quantiles.copy_((low + high) / 2)
        return float(net.aux_loss())


def save_model(
    path: Path | str, net: nn.Module, meta: dict[str, Any], *, half: bool = True
) -> LoadedModel:
    """Write `path` (.pt) and its sidecar `path.with_suffix('.json')`; return the saved model.

    The stored weights are rounded to float16 when `half`; the entropy tables are rebuilt from
    the rounded weights so the hash describes exactly what a decoder will use.
    """
    path = Path(path)
    net = net.to("cpu").eval()
    meta = {**meta, "aux_loss": round(settle_quantiles(net), 4)}
    if half:
        net = net.half().float()
    net.update(force=True)
    state = net.state_dict()
    digest = weights_hash(state)
    # Parameters go to float16 (already rounded above); buffers (entropy tables, the scale
    # table) keep their exact dtype: they were computed from the rounded parameters.
    parameters = {name for name, _ in net.named_parameters()}
    stored = {
        k: (v.half() if half and k in parameters else v).contiguous() for k, v in state.items()
    }
    meta = {
        **meta,
        "weights_sha256": digest,
        "format": FORMAT,
        "stored_dtype": "float16" if half else "float32",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save({"format": FORMAT, "meta": meta, "state_dict": stored}, partial)
    partial.replace(path)
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return load_file(path)
