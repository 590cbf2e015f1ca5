"""Neural codecs: container, model files, round trips on real tissue, determinism, errors.

Models: small networks the tests build and save with the project's own model writer (random
weights, real entropy tables), CompressAI architectures saved as bare state dicts (what a user's
`--weights PATH` is), and the model the package ships (trained on H&E tissue).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wsitranscode.codecs.base import EncodeSettings
from wsitranscode.dicom import syntaxes as ts
from wsitranscode.errors import DecodeError, UsageError
from wsitranscode.neural import bitstream, registry

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from wsitranscode.codecs import neural as neural_codecs  # noqa: E402
from wsitranscode.neural import engine, modelfile, nets  # noqa: E402


@pytest.fixture(scope="module")
def tiles(tissue_image: np.ndarray) -> list[np.ndarray]:
    """Eight 96x96 tiles of real tissue (synthetic on a fresh machine), one 70x50 edge tile."""
    out = [tissue_image[y : y + 96, x : x + 96] for y in (0, 200, 400, 600) for x in (100, 500)]
    return [np.ascontiguousarray(t) for t in out]


@pytest.fixture(scope="module")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small saved model per architecture (random weights, real entropy tables)."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for arch in nets.ARCHITECTURES:
        torch.manual_seed(1)
        net = nets.build(arch, 16, 24)
        path = folder / f"tiny-{arch}.pt"
        modelfile.save_model(path, net, {"id": f"tiny-{arch}", "arch": arch})
        paths[arch] = path
    return paths


@pytest.fixture(autouse=True)
def fresh_cache():
    engine.clear_cache()
    yield
    engine.clear_cache()


def _settings(**extra: str) -> EncodeSettings:
    return EncodeSettings(quality=85, extra=tuple({"device": "cpu", **extra}.items()))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255.0**2 / mse)) if mse else 99.0


# --- container --------------------------------------------------------------------------------


def _frame(**changes: object) -> bitstream.NeuralFrame:
    values = {
        "model_id": "he-small",
        "weights_sha256": "ab" * 32,
        "quality": 3,
        "height": 250,
        "width": 240,
        "pad_rows": 6,
        "pad_cols": 0,
        "latent_shape": (16, 15),
        "strings": (b"\x01\x02\x03", b""),
    }
    values.update(changes)
    return bitstream.NeuralFrame(**values)  # type: ignore[arg-type]


def test_container_round_trip_keeps_every_field():
    frame = _frame()
    assert bitstream.unpack(bitstream.pack(frame)) == frame
    assert frame.padded_shape == (256, 240)


@pytest.mark.parametrize("position", [0, 5, 20, 60, -9, -1])
def test_container_damage_is_a_clear_error(position: int):
    data = bytearray(bitstream.pack(_frame()))
    data[position] ^= 0x5A
    with pytest.raises(DecodeError, match=r"WSNC magic|damaged|newer"):
        bitstream.unpack(bytes(data))


def test_dicom_fragment_padding_is_accepted():
    frame = _frame(strings=(b"\x01\x02",))
    data = bitstream.pack(frame)
    assert len(data) % 2 == 1
    assert bitstream.unpack(data + b"\x00") == frame


def test_truncated_and_foreign_bytes_are_refused():
    data = bitstream.pack(_frame())
    for broken in (data[:-7], data[:10], b"\xff\xd8\xff\xe0" + data[4:], b""):
        with pytest.raises(DecodeError):
            bitstream.unpack(broken)


# --- the codecs -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", nets.ARCHITECTURES)
def test_every_architecture_round_trips_with_its_private_syntax(
    arch: str, small_models: dict[Path], tiles: list[np.ndarray]
):
    codec = neural_codecs.ModelFileCodec()
    settings = _settings(model=str(small_models[arch]))
    target = codec.target(settings)
    assert target.private and target.lossy and target.photometric == "RGB"
    assert target.transfer_syntax_uid == neural_codecs.SYNTAX_OF_ARCH[arch]
    assert ts.is_private(target.transfer_syntax_uid)
    assert len(target.lossy_method) <= 16 and target.lossy_method.startswith("WSITC_NN_")
    assert f"tiny-{arch}" in target.description
    edge = np.ascontiguousarray(tiles[0][:50, :70])
    payloads = codec.encode_batch([*tiles[:3], edge], settings)
    frames = [bitstream.unpack(p) for p in payloads]
    assert {f.model_id for f in frames} == {f"tiny-{arch}"}
    assert (frames[-1].height, frames[-1].width) == (50, 70)
    stride = nets.stride_of(arch)
    assert (frames[-1].height + frames[-1].pad_rows) % stride == 0
    decoded = codec.decode_batch(payloads)
    assert [d.shape for d in decoded] == [(96, 96, 3)] * 3 + [(50, 70, 3)]
    assert all(d.dtype == np.uint8 for d in decoded)
    # The DICOM decoding path (what validate/export use) gives the very same pixels.
    from wsitranscode.dicom.decode import PixelInfo, decode_frame

    info = PixelInfo(target.transfer_syntax_uid, 50, 70, 3, "RGB", 8, 8)
    assert np.array_equal(decode_frame(payloads[-1], info), decoded[-1])


def test_decode_frame_refuses_a_frame_of_another_size(small_models, tiles):
    from wsitranscode.dicom.decode import PixelInfo, decode_frame

    codec = neural_codecs.ModelFileCodec()
    data = codec.encode(tiles[0], _settings(model=str(small_models["factorized"])))
    info = PixelInfo(ts.PRIVATE_NEURAL_FACTORIZED, 256, 256, 3, "RGB", 8, 8)
    with pytest.raises(DecodeError, match=r"96x96 tile.*256x256"):
        decode_frame(data, info)


def test_compressai_weights_file_round_trips_every_cai_codec(tmp_path: Path, tiles):
    """`--weights PATH` with CompressAI's own architectures (bare state dicts, as the zoo ships)."""
    from compressai.zoo import bmshj2018_factorized, bmshj2018_hyperprior

    for name, builder in (
        ("cai", bmshj2018_factorized),
        ("cai-msssim", bmshj2018_factorized),
        ("cai-hyperprior", bmshj2018_hyperprior),
    ):
        torch.manual_seed(0)
        quality = neural_codecs.compressai_quality(30)
        net = builder(quality=quality, pretrained=False)
        net.update()
        weights = tmp_path / f"{name}.pth.tar"
        torch.save(net.state_dict(), weights)
        codec = neural_codecs.CompressAICodec(name, "")
        settings = EncodeSettings(quality=30, extra=(("weights", str(weights)), ("device", "cpu")))
        target = codec.target(settings)
        assert "compressai/bmshj2018-" in target.description
        assert f"/q{quality}" in target.description
        payloads = codec.encode_batch(tiles[:2], settings)
        assert bitstream.unpack(payloads[0]).quality == quality
        assert [d.shape for d in codec.decode_batch(payloads)] == [(96, 96, 3)] * 2
        # Another process has no such model unless told where it is: WSITRANSCODE_MODELS.
        engine.clear_cache()
        with pytest.raises(DecodeError, match=r"not available|not installed"):
            engine.decode_frames(payloads[:1])


def test_cai_without_weights_says_how_to_get_them(monkeypatch, tmp_path):
    import compressai.zoo.image as zoo_image

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    urls = {a: {m: dict.fromkeys(q, "http://127.0.0.1:9/none.pth.tar") for m, q in v.items()}
            for a, v in zoo_image.model_urls.items()}  # fmt: skip
    monkeypatch.setattr(zoo_image, "model_urls", urls)
    codec = neural_codecs.CompressAICodec("cai", "")
    with pytest.raises(UsageError, match=r"no weights for cai q7 .*--weights PATH"):
        codec.target(EncodeSettings(quality=85))


def test_quality_maps_onto_compressai_qualities():
    mapped = [neural_codecs.compressai_quality(q) for q in range(0, 101, 5)]
    assert mapped == sorted(mapped)  # monotone
    assert mapped[0] == 1 and mapped[-1] == 8
    assert neural_codecs.compressai_quality(85) == 7


def test_unsupported_pixels_and_lossless_are_refused(small_models):
    codec = neural_codecs.ModelFileCodec()
    assert "8-bit RGB" in codec.unsupported_pixels(1, 8)
    assert "8-bit RGB" in codec.unsupported_pixels(3, 12)
    assert codec.unsupported_pixels(3, 8) is None
    with pytest.raises(UsageError, match="lossy"):
        codec.target(
            EncodeSettings(lossless=True, extra=(("model", str(small_models["factorized"])),))
        )
    with pytest.raises(UsageError, match="--model FILE"):
        codec.target(EncodeSettings())
    with pytest.raises(UsageError, match="batch-size"):
        codec.target(_settings(model=str(small_models["factorized"]), batch_size="0"))


# --- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["factorized", "hyperprior"])
def test_encoding_and_decoding_are_bit_identical_across_batches_and_threads(
    arch: str, small_models, tiles
):
    codec = neural_codecs.ModelFileCodec()
    settings = _settings(model=str(small_models[arch]))
    reference = codec.encode_batch(tiles, settings)
    one_by_one = [codec.encode(t, settings) for t in tiles]
    assert one_by_one == reference
    model = engine.load_path(small_models[arch])
    assert engine.encode_tiles(model, tiles, batch_size=3) == reference
    decoded = engine.decode_frames(reference, batch_size=16)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            for batch in (1, 3, 8):
                again = engine.decode_frames(reference, batch_size=batch)
                assert all(np.array_equal(a, b) for a, b in zip(decoded, again, strict=True))
    finally:
        torch.set_num_threads(threads)


def test_decoding_in_another_process_gives_the_same_pixels(small_models, tiles, tmp_path):
    """A fresh interpreter (another thread count) finds the model through WSITRANSCODE_MODELS."""
    codec = neural_codecs.ModelFileCodec()
    payload = codec.encode(tiles[1], _settings(model=str(small_models["stain-aware"])))
    expected = codec.decode(payload)
    (tmp_path / "frame.bin").write_bytes(payload)
    script = (
        "import sys, numpy as np, torch; torch.set_num_threads(1);"
        "from wsitranscode.neural.engine import decode_frames;"
        "d = decode_frames([open(sys.argv[1], 'rb').read()])[0]; np.save(sys.argv[2], d)"
    )
    env = {**__import__("os").environ, registry.ENV_VAR: str(small_models["stain-aware"].parent)}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "frame.bin"), str(tmp_path / "out.npy")],
        check=True,
        env=env,
        timeout=120,
    )
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_gpu_encoded_frames_decode_identically_on_the_cpu(small_models, tiles):
    codec = neural_codecs.ModelFileCodec()
    gpu = codec.encode_batch(tiles, _settings(model=str(small_models["factorized"]), device="cuda"))
    cpu_decoded = codec.decode_batch(gpu)
    again = engine.decode_frames(gpu, batch_size=1)
    assert all(np.array_equal(a, b) for a, b in zip(cpu_decoded, again, strict=True))


# --- models: hash, lookup, wrong model --------------------------------------------------------


def test_model_file_records_its_hash_and_refuses_damage(small_models, tmp_path):
    model = modelfile.load_file(small_models["factorized"])
    assert model.weights_sha256 == modelfile.weights_hash(model.net.state_dict())
    sidecar = registry.read_sidecar(small_models["factorized"].with_suffix(".json"))
    assert sidecar is not None and sidecar.weights_sha256 == model.weights_sha256
    saved = torch.load(small_models["factorized"], weights_only=True)
    saved["state_dict"]["g_s.0.weight"][0, 0, 0, 0] += 1
    damaged = tmp_path / "damaged.pt"
    torch.save(saved, damaged)
    with pytest.raises(Exception, match="differs from the one recorded"):
        modelfile.load_file(damaged)


def test_a_frame_refuses_another_model_with_the_same_name(
    small_models, tiles, tmp_path, monkeypatch
):
    codec = neural_codecs.ModelFileCodec()
    payload = codec.encode(tiles[0], _settings(model=str(small_models["factorized"])))
    original = bitstream.unpack(payload).weights_sha256
    # Same id, other weights, in the user's models folder.
    torch.manual_seed(2)
    other = modelfile.save_model(
        tmp_path / "tiny-factorized.pt",
        nets.build("factorized", 16, 24),
        {"id": "tiny-factorized", "arch": "factorized"},
    )
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path))
    engine.clear_cache()
    with pytest.raises(DecodeError) as err:
        engine.decode_frames([payload])
    message = str(err.value)
    assert original[:12] in message and other.weights_sha256[:12] in message
    assert "tiny-factorized" in message
    # The right file in the folder makes it decode again.
    monkeypatch.setenv(registry.ENV_VAR, str(small_models["factorized"].parent))
    engine.clear_cache()
    assert engine.decode_frames([payload])[0].shape == (96, 96, 3)


def test_importing_the_codecs_does_not_import_torch():
    code = (
        "import sys; import wsitranscode.codecs.neural as n; "
        "from wsitranscode.codecs.base import codec_names; codec_names(); "
        "assert 'torch' not in sys.modules and 'compressai' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- the shipped model ------------------------------------------------------------------------


def _shipped() -> list[registry.ModelInfo]:
    return [m for m in registry.list_models() if m.path.parent == registry.shipped_dir()]


def test_the_package_ships_a_small_model_trained_on_tissue():
    shipped = _shipped()
    assert shipped, "wsitranscode/models/ holds no model"
    for info in shipped:
        assert info.path.stat().st_size < 4_000_000
        assert info.meta["training"]["steps_done"] > 0
        assert info.meta["validation"]["psnr_db"] > 0
        model = modelfile.load_file(info.path)
        assert model.weights_sha256 == info.weights_sha256


def test_shipped_model_round_trips_real_tissue(tiles):
    from wsitranscode.codecs.base import get_codec

    for info in _shipped():
        codec = get_codec(f"path-{info.name}")
        settings = EncodeSettings(extra=(("device", "cpu"),))
        payloads = codec.encode_batch(tiles, settings)
        decoded = codec.decode_batch(payloads)
        psnrs = [_psnr(t, d) for t, d in zip(tiles, decoded, strict=True)]
        bpp = np.mean([8 * len(p) / (96 * 96) for p in payloads])
        # A trained model: well above the verification floor of recode (20 dB), well below 8 bpp.
        assert min(psnrs) > 22, psnrs
        assert bpp < 4, bpp


def test_stain_features_separate_hematoxylin_from_eosin():
    from wsitranscode.neural.stain import RGB_FROM_HED, hed_numpy

    def colour(od: np.ndarray) -> np.ndarray:
        return np.clip(256 * np.exp(-od * np.log(256)) - 1, 0, 255).round().astype(np.uint8)

    hematoxylin = colour(0.5 * RGB_FROM_HED[0])[None, None]
    eosin = colour(0.5 * RGB_FROM_HED[1])[None, None]
    h, e = hed_numpy(hematoxylin)[0, 0], hed_numpy(eosin)[0, 0]
    assert h[0] > 0.4 and abs(h[1]) < 0.05
    assert e[1] > 0.4 and abs(e[0]) < 0.05
    assert np.allclose(hed_numpy(np.full((1, 1, 3), 255, np.uint8)), 0, atol=1e-9)


def test_a_user_model_named_like_a_shipped_one_is_found_by_its_hash(tiles, tmp_path, monkeypatch):
    """`train -o hs/he-small.pt` then WSITRANSCODE_MODELS=hs: its frames decode (by hash)."""
    shipped = {info.name for info in _shipped()}
    assert "he-small" in shipped
    torch.manual_seed(3)
    user = modelfile.save_model(
        tmp_path / "hs" / "he-small.pt",
        nets.build("factorized", 16, 24),
        {"id": "he-small", "arch": "factorized"},
    )
    codec = neural_codecs.ModelFileCodec()
    payload = codec.encode(tiles[0], _settings(model=str(user.source)))
    assert bitstream.unpack(payload).model_id == "he-small"
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path / "hs"))
    engine.clear_cache()  # a new process: validate, export
    assert engine.decode_frames([payload])[0].shape == (96, 96, 3)
    # By name the two are ambiguous: a usage error naming both files.
    with pytest.raises(UsageError) as err:
        engine.load_named("he-small")
    message = str(err.value)
    assert str(user.source) in message
    assert str(registry.shipped_dir() / "he-small.pt") in message


def test_models_of_one_name_in_two_user_folders_are_both_found(tiles, tmp_path, monkeypatch):
    paths = []
    for folder, seed in (("a", 4), ("b", 5)):
        torch.manual_seed(seed)
        saved = modelfile.save_model(
            tmp_path / folder / "dup.pt",
            nets.build("factorized", 16, 24),
            {"id": "dup", "arch": "factorized"},
        )
        paths.append(saved.source)
    codec = neural_codecs.ModelFileCodec()
    payload = codec.encode(tiles[0], _settings(model=paths[1]))
    monkeypatch.setenv(
        registry.ENV_VAR, f"{tmp_path / 'a'}{__import__('os').pathsep}{tmp_path / 'b'}"
    )
    engine.clear_cache()
    assert engine.decode_frames([payload])[0].shape == (96, 96, 3)
    with pytest.raises(UsageError, match=r"ambiguous.*a/dup\.pt.*b/dup\.pt"):
        engine.load_named("dup")


def test_cai_weights_must_be_compressai_architecture_at_the_mapped_quality(tmp_path, small_models):
    """A model from `train` (or other channels/architecture) would be stamped with a zoo id."""
    from compressai.zoo import bmshj2018_hyperprior

    settings = EncodeSettings(
        quality=30, extra=(("weights", str(small_models["factorized"])), ("device", "cpu"))
    )
    codec = neural_codecs.CompressAICodec("cai", "")
    with pytest.raises(UsageError, match=r"made by `wsitranscode train`.*--codec neural --model"):
        codec.target(settings)
    # Bare state dicts of the wrong size or architecture.
    torch.manual_seed(0)
    small = nets.build("factorized", 16, 24)
    small.update()
    hyper = bmshj2018_hyperprior(quality=1, pretrained=False)
    hyper.update()
    for name, net, found in (("small", small, "N=16, M=24"), ("hyper", hyper, "hyperprior")):
        weights = tmp_path / f"{name}.pth.tar"
        torch.save(net.state_dict(), weights)
        settings = EncodeSettings(quality=30, extra=(("weights", str(weights)), ("device", "cpu")))
        with pytest.raises(
            UsageError, match=rf"not CompressAI's bmshj2018-factorized at quality 4.*{found}"
        ):
            codec.target(settings)


def test_a_file_that_is_not_a_model_is_one_clear_line(tmp_path):
    from wsitranscode.errors import InvalidInputError

    text = tmp_path / "notes.txt"
    text.write_text("hello world\n" * 50)
    pickled = tmp_path / "pickled.pt"
    torch.save(
        {"state_dict": {"w": torch.zeros(2)}, "when": __import__("datetime").date(2024, 1, 1)},
        pickled,
    )
    for path in (text, pickled):
        for codec, option in (
            (neural_codecs.ModelFileCodec(), "model"),
            (neural_codecs.CompressAICodec("cai", ""), "weights"),
        ):
            settings = EncodeSettings(quality=30, extra=((option, str(path)), ("device", "cpu")))
            with pytest.raises(InvalidInputError) as err:
                codec.target(settings)
            message = str(err.value)
            assert message.startswith(f"{path}: not a model file"), message
            assert "torch.load" not in message and "\n" not in message
