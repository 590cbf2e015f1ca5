"""Session-wide fixtures: tissue pixels and DICOM WSI slides built by `wsitranscode.synth`.

Slides are built once per session and per set of arguments: treat the returned folders as
read-only (copy one before spoiling it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from wsitranscode import synth

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TCGA_SVS = SHARED_DATA / "tissue" / "histolab" / "tcga-cr-7395-01a-01-ts1.svs"
# 1000x750 pixels of the TCGA slide, tissue with some background; not a multiple of 256, so
# level 0 has partial (white-padded) edge tiles. The synthetic stand-in has the same size.
TISSUE_REGION = (0, 1250, 1000, 750)

# The layout of IDC's RMS slides (PixelMed TIFFToDicom): reversible JPEG 2000 (YBR_RCT) for the
# big levels, uncompressed RGB for the small ones.
RMS_LEVEL_SYNTAXES = (
    synth.JPEG_2000_LOSSLESS,
    synth.EXPLICIT_VR_LITTLE_ENDIAN,
    synth.EXPLICIT_VR_LITTLE_ENDIAN,
)

WsiFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real sample slides and tissue), or skip where it does not exist."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"../shared/data is absent (fresh machine): {SHARED_DATA} holds the real sample "
            "files this test reads"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def tissue_image() -> np.ndarray:
    """HxWx3 uint8 H&E (750x1000): a real TCGA region if ../shared/data exists, else synthetic.

    WSITRANSCODE_SYNTHETIC_TISSUE=1 forces the synthetic image (what a fresh machine sees).
    """
    if TCGA_SVS.is_file() and not os.environ.get("WSITRANSCODE_SYNTHETIC_TISSUE"):
        return synth.load_tissue(TCGA_SVS, region=TISSUE_REGION)
    _, _, width, height = TISSUE_REGION
    return synth.synthetic_tissue(height, width, seed=0)


@pytest.fixture(scope="session")
def wsi_factory(tmp_path_factory: pytest.TempPathFactory, tissue_image: np.ndarray) -> WsiFactory:
    """`build(name="wsi", image=tissue_image, **build_wsi_kwargs) -> folder`, cached per kwargs.

    Two calls with the same arguments (whatever the name) return the same folder.
    """
    cache: dict[str, Path] = {}

    def build(name: str = "wsi", **kwargs: object) -> Path:
        image = kwargs.pop("image", tissue_image)
        assert isinstance(image, np.ndarray)
        key = _cache_key(image, kwargs)
        if key not in cache:
            folder = tmp_path_factory.mktemp(name)
            synth.build_wsi(image, folder, **kwargs)  # type: ignore[arg-type]
            cache[key] = folder
        return cache[key]

    return build


def _cache_key(image: np.ndarray, kwargs: dict[str, object]) -> str:
    digest = hashlib.sha1(image.tobytes()).hexdigest()
    frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return f"{image.shape}:{digest}:{sorted(frozen.items(), key=lambda kv: kv[0])!r}"


@pytest.fixture(scope="session")
def rms_like_slide(wsi_factory: WsiFactory) -> Path:
    """A 3-level slide laid out like IDC's RMS slides: level 0 reversible JPEG 2000 (YBR_RCT),
    levels 1-2 uncompressed RGB (Explicit VR Little Endian), plus a label and a thumbnail."""
    return wsi_factory(
        "rms-like",
        transfer_syntax=synth.EXPLICIT_VR_LITTLE_ENDIAN,
        level_syntaxes=RMS_LEVEL_SYNTAXES,
        levels=3,
        label=True,
        thumbnail=True,
        patient_id="RMS-LIKE-0001",
    )


@pytest.fixture(scope="session")
def ciga_format_weights(tmp_path_factory) -> Path:
    """A seeded random ResNet18 with a SimCLR head, saved with the keys of Ciga's checkpoint.

    Tests pass it explicitly (--feature-weights): the code path of the real weights, never
    random weights behind a user's back."""
    import torch
    import torchvision

    torch.manual_seed(0)
    backbone = torchvision.models.resnet18(weights=None)
    state = {f"model.resnet.{k}": v for k, v in backbone.state_dict().items() if "fc." not in k}
    head = torch.nn.Sequential(
        torch.nn.Identity(), torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128)
    )
    state |= {f"model.resnet.fc.{k}": v for k, v in head.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "test_ciga_format_resnet18.ckpt"
    torch.save({"state_dict": state, "epoch": 0}, path)
    return path


@pytest.fixture(scope="session")
def alexnet_weights(tmp_path_factory) -> Path:
    """Seeded random torchvision AlexNet weights for the LPIPS trunk (passed explicitly)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "test_alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path
