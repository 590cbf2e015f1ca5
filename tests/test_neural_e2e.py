"""The shipped neural codec end to end on a real multi-level DICOM WSI: recode, validate, export.

The exported series must have no `dciodvfy` error its source lacks and must open in wsidicom.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.dicom_checks import dciodvfy_errors, published_outputs
from wsitranscode.cli import main
from wsitranscode.dicom import syntaxes as ts
from wsitranscode.dicom.derive import NON_STANDARD_MARKER

pytest.importorskip("torch")
pytest.importorskip("compressai")

import wsitranscode.codecs.neural  # noqa: F401  (registers the neural codecs)
from wsitranscode.dicom.frames import FrameReader
from wsitranscode.neural import bitstream, registry


def _shipped_name() -> str:
    shipped = [m for m in registry.list_models() if m.path.parent == registry.shipped_dir()]
    if not shipped:
        pytest.fail("the package ships no neural model in wsitranscode/models/")
    return shipped[0].name


@pytest.fixture(scope="module")
def slide(wsi_factory) -> Path:
    """Three levels of real tissue (JPEG baseline level 0), a label and a thumbnail."""
    return wsi_factory(
        "neural-src",
        transfer_syntax=ts.JPEG_BASELINE,
        levels=3,
        tile_size=256,
        label=True,
        thumbnail=True,
    )


@pytest.fixture(scope="module")
def recoded(slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("neural-out")
    # The label (printed text and a barcode) is far from the tissue the model was trained on: it
    # comes back near 16 dB, below recode's default floor of 20 dB.
    code = main(
        ["recode", str(slide), "-o", str(out), "--codec", f"path-{_shipped_name()}",
         "--device", "cpu", "--batch-size", "4", "--workers", "2", "--min-psnr", "12"]
    )  # fmt: skip
    assert code == 0
    return out


def test_recode_writes_a_marked_private_series_that_pydicom_reads(slide: Path, recoded: Path):
    import pydicom

    ts.register_with_pydicom()
    name = _shipped_name()
    info = next(m for m in registry.list_models() if m.name == name)
    outputs = published_outputs(recoded)
    assert len(outputs) == len(list(slide.rglob("*.dcm")))
    for path in outputs:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ts.PRIVATE_NEURAL_FACTORIZED
        assert ds.PhotometricInterpretation == "RGB"
        assert ds.LossyImageCompression == "01"
        assert ds.LossyImageCompressionMethod[-1] == "WSITC_NN_" + info.weights_sha256[:7].upper()
        assert name in ds.DerivationDescription
        assert info.weights_sha256[:12] in ds.DerivationDescription
        label = f"[path-{name} {info.weights_sha256[:8]}] {NON_STANDARD_MARKER}"
        assert ds.SeriesDescription.endswith(label) and len(ds.SeriesDescription) <= 64
        pixels = ds.pixel_array
        frames = pixels if ds.NumberOfFrames > 1 else pixels[None]
        assert frames.shape[1:] == (ds.Rows, ds.Columns, 3)
        with FrameReader(path) as reader:
            first = bitstream.unpack(reader.read_frame(0))
        assert first.model_id == name and first.weights_sha256 == info.weights_sha256


def test_recode_warns_that_the_syntax_is_private(slide: Path, tmp_path: Path, capsys):
    code = main(
        ["recode", str(slide), "-o", str(tmp_path / "o"), "--codec", f"path-{_shipped_name()}",
         "--only", "volume", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "private" in err and "export" in err


def test_validate_accepts_the_recoded_series(slide: Path, recoded: Path, tmp_path: Path):
    code = main(
        ["validate", str(slide), str(recoded), "-o", str(tmp_path / "report"), "--metrics",
         "psnr,ssim", "--sample", "4", "--min-psnr", "15", "--no-dciodvfy", "--json"]
    )  # fmt: skip
    assert code == 0


@pytest.mark.skipif(
    importlib.util.find_spec("wsitranscode.commands.export") is None,
    reason="`wsitranscode export` (wsitranscode.commands.export) is not built yet",
)
def test_export_to_jpeg_xl_is_valid_dicom_that_wsidicom_opens(
    slide: Path, recoded: Path, tmp_path: Path
):
    exported = tmp_path / "exported"
    assert main(["export", str(recoded), "-o", str(exported), "--codec", "jxl", "--q", "95"]) == 0
    outputs = published_outputs(exported)
    assert len(outputs) == len(published_outputs(recoded))
    import pydicom

    sources = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in slide.rglob("*.dcm")
    }
    for path in outputs:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == ts.JPEG_XL
        assert "NON-STANDARD" not in ds.get("SeriesDescription", "")
        referenced = {item.ReferencedSOPInstanceUID for item in ds.SourceImageSequence}
        original = next(sources[uid] for uid in referenced if uid in sources)
        new_errors = set(dciodvfy_errors(path)) - set(dciodvfy_errors(original))
        assert not new_errors, new_errors
    from wsidicom import WsiDicom

    with WsiDicom.open(outputs[0].parent) as wsi:
        region = np.asarray(wsi.read_region((0, 0), 0, (256, 256)))
        assert region.shape[:2] == (256, 256)
        assert region[..., :3].std() > 5  # tissue, not a blank image


def test_a_neural_recode_prints_no_library_warnings(slide: Path, tmp_path: Path):
    """In a fresh process (warnings show once per process): stderr carries our own lines only,
    not torch's deprecation notice about compressai's import."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "wsitranscode", "recode", str(slide), "-o", str(tmp_path / "o"),
         "--codec", f"path-{_shipped_name()}", "--only", "volume", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
