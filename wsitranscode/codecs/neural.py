"""Learned codecs: CompressAI's bmshj2018 models (`cai`, `cai-msssim`, `cai-hyperprior`), models
trained with `wsitranscode train` (`path-<name>`, one per model found), and any model file
(`neural` with the option ("model", FILE)).

Importing this module is cheap: it reads the models' JSON sidecars only; torch and compressai are
imported when a codec first loads its model. No DICOM transfer syntax exists for these bitstreams:
the output uses private syntaxes (one per architecture, `syntaxes.NEURAL_SYNTAXES`) and is marked
non-standard; `wsitranscode export` turns it back into a standard syntax.

Quality: `cai*` map q (0-100) onto CompressAI's quality 1-8 through the project's common meaning of
q (the PSNR libjpeg reaches at q on tissue, `classic.quality_to_psnr`): the CompressAI quality
whose published Kodak PSNR (bmshj2018-factorized, MSE) is nearest, see `_COMPRESSAI_KODAK_PSNR`.
q85 -> 7, q80 -> 7, q70 -> 6, q50 -> 5, q30 -> 4, q10 -> 2. Models trained here have one rate
point: q is recorded but does not change the output.

Codec options (`EncodeSettings.extra`): ("weights", PATH) CompressAI weights for `cai*` instead of
the zoo download; ("model", PATH) the model file for `neural`; ("device", "auto"|"cpu"|"cuda")
where the encoder's analysis transform runs (default auto; decoding always runs on the CPU, the
reference result); ("batch_size", N) tiles per forward pass (default: 1 on the CPU, where larger
batches run slower per tile, 32 on a GPU).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from wsitranscode.codecs.base import Codec, EncodeSettings, TargetEncoding, register
from wsitranscode.dicom import syntaxes as ts
from wsitranscode.errors import UsageError

# CompressAI quality -> its published mean PSNR (dB) on Kodak, bmshj2018-factorized (MSE).
_COMPRESSAI_KODAK_PSNR = {1: 27.2, 2: 28.6, 3: 30.1, 4: 31.6, 5: 33.3, 6: 35.1, 7: 37.0, 8: 38.8}
SYNTAX_OF_ARCH = {
    "factorized": ts.PRIVATE_NEURAL_FACTORIZED,
    "hyperprior": ts.PRIVATE_NEURAL_HYPERPRIOR,
    "stain-aware": ts.PRIVATE_NEURAL_STAIN_AWARE,
}
DEFAULT_DEVICE = "auto"


def compressai_quality(quality: int) -> int:
    """CompressAI quality (1-8) whose Kodak PSNR is nearest to what q means for libjpeg."""
    from wsitranscode.codecs.classic import quality_to_psnr

    target = quality_to_psnr(quality)
    return min(_COMPRESSAI_KODAK_PSNR, key=lambda k: (abs(_COMPRESSAI_KODAK_PSNR[k] - target), k))


def lossy_method_term(weights_sha256: str) -> str:
    """LossyImageCompressionMethod (CS, at most 16 characters): WSITC_NN_ + 7 hash digits."""
    return "WSITC_NN_" + weights_sha256[:7].upper()


def codec_options(settings: EncodeSettings) -> dict[str, str]:
    options = dict(settings.extra)
    size = options.get("batch_size", "1")
    if not size.isdigit() or int(size) < 1:
        raise UsageError(f"--batch-size must be a positive integer, not {size!r}")
    device = options.get("device", DEFAULT_DEVICE)
    if device.split(":")[0] not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, not {device!r}")
    return options


class NeuralCodec(Codec):
    """Shared behaviour; subclasses say which model to load for given settings."""

    def _load(self, settings: EncodeSettings) -> Any:
        raise NotImplementedError

    def _quality_index(self, settings: EncodeSettings) -> int:
        return 0

    def available(self) -> tuple[bool, str]:
        missing = [name for name in ("torch", "compressai") if find_spec(name) is None]
        if missing:
            return False, f"needs {' and '.join(missing)} (pip install compressai)"
        return True, ""

    def unsupported_pixels(self, samples_per_pixel: int, bits_stored: int) -> str | None:
        if samples_per_pixel != 3 or bits_stored > 8:
            return (
                f"neural codecs encode 8-bit RGB only, not {samples_per_pixel} sample(s) of "
                f"{bits_stored} bits; use jxl, j2k or htj2k"
            )
        return None

    def target(self, settings: EncodeSettings) -> TargetEncoding:
        if settings.lossless:
            raise UsageError(f"{self.name} is a lossy codec; use jxl, j2k or htj2k with --lossless")
        codec_options(settings)
        model = self._load(settings)
        return TargetEncoding(
            codec=self.name,
            transfer_syntax_uid=SYNTAX_OF_ARCH[model.arch],
            photometric="RGB",
            lossy=True,
            lossy_method=lossy_method_term(model.weights_sha256),
            description=f"neural {model.model_id} weights sha256:{model.short_hash}",
            private=True,
            series_label=f"{self.name} {model.weights_sha256[:8]}",
        )

    def encode(self, tile: np.ndarray, settings: EncodeSettings) -> bytes:
        return self.encode_batch([tile], settings)[0]

    def encode_batch(self, tiles: list[np.ndarray], settings: EncodeSettings) -> list[bytes]:
        """Encode many tiles in batches of ("batch_size", N) on ("device", D)."""
        from wsitranscode.neural.engine import encode_tiles

        options = codec_options(settings)
        return encode_tiles(
            self._load(settings),
            tiles,
            quality=self._quality_index(settings),
            device=options.get("device", DEFAULT_DEVICE),
            batch_size=int(options["batch_size"]) if "batch_size" in options else None,
        )

    def decode(self, data: bytes) -> np.ndarray:
        return self.decode_batch([data])[0]

    def decode_batch(self, payloads: list[bytes]) -> list[np.ndarray]:
        """Decode on the CPU (the reference result), frames of one model batched together."""
        from wsitranscode.neural.engine import decode_frames

        return decode_frames(payloads)


class CompressAICodec(NeuralCodec):
    """CompressAI's pretrained bmshj2018 models through its own zoo loader, or `--weights`."""

    def __init__(self, name: str, summary: str):
        self.name = name
        self.summary = summary

    def _quality_index(self, settings: EncodeSettings) -> int:
        return compressai_quality(settings.quality)

    def _load(self, settings: EncodeSettings) -> Any:
        from wsitranscode.neural.engine import load_zoo

        weights = codec_options(settings).get("weights")
        return load_zoo(
            self.name, self._quality_index(settings), Path(weights) if weights else None
        )


class TrainedCodec(NeuralCodec):
    """A model trained by `wsitranscode train`, found by name (shipped or WSITRANSCODE_MODELS)."""

    def __init__(self, model_name: str, summary: str):
        self.model_name = model_name
        self.name = f"path-{model_name}"
        self.summary = summary

    def _load(self, settings: EncodeSettings) -> Any:
        from wsitranscode.neural.engine import load_named

        if "model" in codec_options(settings):
            raise UsageError(f"--codec {self.name} names its model: leave out --model")
        return load_named(self.model_name)


class ModelFileCodec(NeuralCodec):
    """Any model file given with ("model", FILE) (the CLI's `--model FILE`)."""

    name = "neural"
    summary = "a learned codec from a model file (--model FILE, from `wsitranscode train`)"

    def _load(self, settings: EncodeSettings) -> Any:
        from wsitranscode.neural.engine import load_path

        path = codec_options(settings).get("model")
        if not path:
            raise UsageError(f"--codec {self.name} needs --model FILE (a model from train)")
        return load_path(Path(path))


def _register_all() -> None:
    register(
        "cai",
        lambda: CompressAICodec(
            "cai", "CompressAI bmshj2018-factorized (MSE), pretrained: private syntax"
        ),
    )
    register(
        "cai-msssim",
        lambda: CompressAICodec(
            "cai-msssim", "CompressAI bmshj2018-factorized (MS-SSIM), pretrained: private syntax"
        ),
    )
    register(
        "cai-hyperprior",
        lambda: CompressAICodec(
            "cai-hyperprior", "CompressAI bmshj2018-hyperprior (MSE), pretrained: private syntax"
        ),
    )
    register("neural", ModelFileCodec)
    from wsitranscode.neural.registry import list_models

    for info in list_models():
        summary = f"learned {info.arch} model {info.name} (sha256:{info.weights_sha256[:12]})"
        register(f"path-{info.name}", lambda n=info.name, s=summary: TrainedCodec(n, s))


_register_all()
