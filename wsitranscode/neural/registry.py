"""Where models are found, without importing torch: shipped models and WSITRANSCODE_MODELS.

A model is a weights file `<name>.pt` with a JSON sidecar `<name>.json` (written by
`wsitranscode train`) holding its id, architecture, weights hash, training metadata and
validation figures. The package ships its models in `wsitranscode/models/`; users add folders
(or files) with the environment variable WSITRANSCODE_MODELS (a path list, like PATH). Each
becomes the codec `path-<name>`. Folders in WSITRANSCODE_MODELS may also hold bare CompressAI
weights (`*.pth`, `*.pth.tar`, `*.pt` without sidecar): decoders find them by weights hash.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "WSITRANSCODE_MODELS"
WEIGHT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".tar")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path  # the weights file
    meta: dict[str, Any]

    @property
    def weights_sha256(self) -> str:
        return str(self.meta.get("weights_sha256", ""))

    @property
    def arch(self) -> str:
        return str(self.meta.get("arch", "factorized"))


def shipped_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "models"


def model_dirs() -> list[Path]:
    """The shipped models folder, then the entries of WSITRANSCODE_MODELS in order."""
    extra = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    return [shipped_dir(), *extra]


def _sidecars(entry: Path) -> list[Path]:
    if entry.is_file():
        sidecar = entry.with_suffix(".json")
        return [sidecar] if sidecar.is_file() else []
    if entry.is_dir():
        return sorted(entry.glob("*.json"))
    return []


def read_sidecar(sidecar: Path) -> ModelInfo | None:
    """The model a sidecar describes, or None when it is not one of ours or its weights are gone."""
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith(
        "wsitranscode-neural-model/"
    ):
        return None
    weights = sidecar.with_suffix(".pt")
    if not weights.is_file():
        return None
    return ModelInfo(str(meta.get("id") or sidecar.stem), weights, meta)


def all_models() -> list[ModelInfo]:
    """Every model with a sidecar, shipped first, whatever their names (each file once).

    Decoding looks a frame's model up here by weights hash, so a user's model named like a
    shipped one (or like one in another folder) is found all the same.
    """
    found: dict[Path, ModelInfo] = {}
    for entry in model_dirs():
        for sidecar in _sidecars(entry):
            info = read_sidecar(sidecar)
            if info is not None:
                found.setdefault(info.path.resolve(), info)
    return list(found.values())


def models_named(name: str) -> list[ModelInfo]:
    """The registered models called `name` (more than one when folders disagree)."""
    return [info for info in all_models() if info.name == name]


def list_models() -> list[ModelInfo]:
    """One model per name (the first found: shipped, then WSITRANSCODE_MODELS in order)."""
    found: dict[str, ModelInfo] = {}
    for info in all_models():
        found.setdefault(info.name, info)
    return list(found.values())


def bare_weight_files() -> list[Path]:
    """Weight files without a sidecar in WSITRANSCODE_MODELS (checked by hash when needed)."""
    files: list[Path] = []
    for entry in model_dirs()[1:]:
        candidates = (
            [entry] if entry.is_file() else sorted(entry.iterdir()) if entry.is_dir() else []
        )
        for path in candidates:
            bare = not path.with_suffix(".json").is_file()
            if path.is_file() and path.name.endswith(WEIGHT_SUFFIXES) and bare:
                files.append(path)
    return files
