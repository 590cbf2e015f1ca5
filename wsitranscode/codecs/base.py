"""The one small interface every codec implements, and the registry that finds them.

A codec is added by adding one module that calls `register(...)`; nothing else changes.
Pixel arrays are numpy HxWxS (S = 3 for RGB, 1 or absent for MONOCHROME2), uint8 or uint16.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class EncodeSettings:
    """What the user asked for. `quality` is 0-100, higher is better; codecs map it."""

    quality: int = 85
    lossless: bool = False
    effort: int | None = None
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class TargetEncoding:
    """What a codec writes for given settings: everything the DICOM header must say about it."""

    codec: str
    transfer_syntax_uid: str
    photometric: str  # for 3-sample images; MONOCHROME2 stays MONOCHROME2
    lossy: bool
    lossy_method: str | None  # LossyImageCompressionMethod term, e.g. ISO_18181_1
    description: str  # human-readable, e.g. "JPEG XL q85 effort 7"
    private: bool = False  # True when the transfer syntax is not in the DICOM standard
    compresses_source_bytes: bool = False  # True when the codec consumes encoded source frames
    # a short form for SeriesDescription (LO, 64 characters, shared with the source's text),
    # where `description` would not fit: "path-he-small ef0e3668"
    series_label: str | None = None


class Codec(ABC):
    """One image codec family (JPEG, JPEG XL, ...)."""

    name: str = ""
    summary: str = ""
    uses_effort: bool = False  # whether EncodeSettings.effort changes what it writes
    # the EncodeSettings.extra keys it reads; None: any (neural codecs: model, weights, ...)
    option_keys: frozenset[str] | None = None

    @abstractmethod
    def target(self, settings: EncodeSettings) -> TargetEncoding:
        """Describe the output for these settings; raise UsageError for unsupported settings."""

    @abstractmethod
    def encode(self, tile: np.ndarray, settings: EncodeSettings) -> bytes:
        """Encode one decoded tile."""

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decode bytes written by `encode` (or `recompress`) back to pixels."""

    def unsupported_pixels(self, samples_per_pixel: int, bits_stored: int) -> str | None:
        """None when this codec can encode such pixels, else a one-line reason and alternative."""
        return None

    def accepts_source(self, transfer_syntax_uid: str) -> bool:
        """Whether frames in this source transfer syntax can be recoded by this codec."""
        return True

    def recompress(self, source_frame: bytes, settings: EncodeSettings) -> bytes:
        """Encode from the encoded source frame itself (when target().compresses_source_bytes)."""
        raise NotImplementedError

    def restore_source(self, data: bytes) -> bytes:
        """Inverse of `recompress`: the exact source frame bytes (only for byte-exact codecs)."""
        raise NotImplementedError

    def available(self) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, why and what to install)."""
        return True, ""


_REGISTRY: dict[str, Callable[[], Codec]] = {}
_LOADED: dict[str, Codec] = {}


def register(name: str, factory: Callable[[], Codec]) -> None:
    _REGISTRY[name] = factory


def codec_names() -> list[str]:
    _load_builtin_modules()
    return sorted(_REGISTRY)


def get_codec(name: str) -> Codec:
    from wsitranscode.errors import UsageError

    _load_builtin_modules()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise UsageError(f"unknown codec {name!r}; known codecs: {known}")
    if name not in _LOADED:
        _LOADED[name] = _REGISTRY[name]()
    return _LOADED[name]


def _load_builtin_modules() -> None:
    # Imported lazily so that `--help` stays fast; the neural module registers its codecs
    # without importing torch (that happens when one of them is first used).
    import wsitranscode.codecs.classic
    import wsitranscode.codecs.neural  # noqa: F401
