"""`wsitranscode bench`: sampling, sweep, timing, metrics, BD-rate, outputs, on real codecs."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import WsiFactory
from wsitranscode.bench import (
    BenchOptions,
    bd_rate,
    code_tiles,
    load_tiles,
    parse_precompress,
    parse_qualities,
    run_bench,
    value_at_bpp,
    write_outputs,
)
from wsitranscode.cli import main
from wsitranscode.codecs.base import EncodeSettings
from wsitranscode.codecs.classic import JpegCodec
from wsitranscode.errors import UsageError

QUALITIES = (30, 60, 85)


@pytest.fixture(scope="module")
def tissue_folder(shared_data: Path) -> Path:
    folder = shared_data / "tissue"
    if not folder.is_dir():
        pytest.skip(f"the real tissue folder {folder} is absent")
    return folder


@pytest.fixture(scope="module")
def initial_run(tissue_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    options = BenchOptions(
        codecs=("jpeg", "webp"), qualities=QUALITIES, tiles=6, metrics=("psnr", "ms-ssim")
    )
    result = run_bench([tissue_folder], options)
    out = tmp_path_factory.mktemp("bench-initial")
    return result, write_outputs(result, out), out


@pytest.mark.shared_data
def test_bench_on_real_tissue_writes_every_output(initial_run) -> None:
    result, paths, out = initial_run
    for key in ("csv", "json", "matched", "bd_rate", "html"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} == {"rd-psnr.png", "rd-ms-ssim.png", "time.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    html = paths["html"].read_text()
    assert html.count("src='data:image/png;base64,") == len(pngs)
    assert "src='http" not in html and "<link" not in html  # self-contained

    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 + 2 * len(QUALITIES)  # the JPEG q80 reference, then the sweep
    assert rows[0]["reference"] == "True" and rows[0]["quality"] == "80"
    data = json.loads(paths["json"].read_text())
    assert data["kind"] == "bench" and data["track"] == "initial"
    assert len(data["tiles"]) == 6 and len({t["source"] for t in data["tiles"]}) == 5
    assert data["points"] == json.loads(json.dumps(result.points))


@pytest.mark.shared_data
def test_bench_numbers_are_sane(initial_run) -> None:
    result, _, _ = initial_run
    for codec in ("jpeg", "webp"):
        points = sorted(
            (p for p in result.points if p["codec"] == codec), key=lambda p: p["quality"]
        )
        bpps = [p["bpp"] for p in points]
        psnrs = [p["metrics"]["psnr"]["mean"] for p in points]
        ms_ssims = [p["metrics"]["ms-ssim"]["mean"] for p in points]
        assert bpps == sorted(bpps) and len(set(bpps)) == len(bpps), bpps
        assert psnrs == sorted(psnrs), psnrs
        assert ms_ssims == sorted(ms_ssims)
        assert all(25 < v < 50 for v in psnrs) and all(0.8 < v < 1 for v in ms_ssims)
        assert all(p["metrics"]["psnr"]["std"] > 0 and p["bpp_std"] > 0 for p in points)
        for p in points:
            timing = p["timing"]
            assert timing["encode_ms_1t"] > 0 and timing["decode_ms_1t"] > 0
            assert timing["encode_mpxs_1t"] == pytest.approx(
                0.224 * 0.224 / timing["encode_ms_1t"] * 1000, rel=1e-3
            )
            assert timing["encode_ms_all"] > 0 and timing["decode_mpxs_all"] > 0
    bd = {(r["codec"], r["metric"]): r["bd_rate_percent"] for r in result.bd_rates}
    assert bd[("jpeg", "psnr")] == 0 and bd[("jpeg", "ms-ssim")] == 0
    assert bd[("webp", "psnr")] is not None and math.isfinite(bd[("webp", "psnr")])
    reference = result.reference
    assert reference["codec"] == "jpeg" and reference["quality"] == 80
    jpeg_points = [p for p in result.points if p["codec"] == "jpeg"]
    assert jpeg_points[1]["bpp"] < reference["bpp"] < jpeg_points[2]["bpp"]  # q60 < q80 < q85


@pytest.mark.shared_data
def test_matched_bitrate_table_interpolates_the_curves(initial_run) -> None:
    result, _, _ = initial_run
    at_reference = [
        r for r in result.matched if r["at"].startswith("jpeg q80") and r["metric"] == "psnr"
    ]
    jpeg_row = next(r for r in at_reference if r["codec"] == "jpeg")
    q60, q85 = (
        next(p for p in result.points if p["codec"] == "jpeg" and p["quality"] == q)
        for q in (60, 85)
    )
    low, high = sorted([q60["metrics"]["psnr"]["mean"], q85["metrics"]["psnr"]["mean"]])
    assert low < jpeg_row["value"] < high
    assert jpeg_row["value"] == pytest.approx(result.reference["metrics"]["psnr"]["mean"], abs=0.5)
    labels = {r["at"] for r in result.matched}
    assert {"0.25 bpp", "0.5 bpp", "1 bpp"} <= labels


@pytest.mark.shared_data
def test_precompress_track_measures_against_the_original_tiles(
    tissue_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "jpeg80"
    args = [
        "bench", str(tissue_folder), "-o", str(out), "--codecs", "jpeg,webp", "--q", "60,95",
        "--tiles", "4", "--metrics", "psnr", "--precompress", "jpeg:80", "--timing", "single",
        "--json",
    ]  # fmt: skip
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["track"] == "jpeg80" and Path(data["files"]["html"]).is_file()
    reference_psnr = data["reference"]["metrics"]["psnr"]["mean"]
    jpeg95 = next(p for p in data["points"] if p["codec"] == "jpeg" and p["quality"] == 95)
    # Recompressing JPEG q80 tiles cannot get closer to the originals than the q80 tiles are.
    assert jpeg95["metrics"]["psnr"]["mean"] <= reference_psnr + 0.3
    assert "encode_ms_all" not in jpeg95["timing"] and jpeg95["timing"]["encode_ms_1t"] > 0

    initial = run_bench(
        [tissue_folder],
        BenchOptions(codecs=("jpeg",), qualities=(95,), tiles=4, metrics=("psnr",)),
    )
    assert initial.points[0]["metrics"]["psnr"]["mean"] > reference_psnr + 2


def test_tiles_from_a_dicom_series_are_its_pixels_on_tissue(
    wsi_factory: WsiFactory, tissue_image: np.ndarray
) -> None:
    folder = wsi_factory("bench-native", tile_size=256, levels=3)
    tiles, notes = load_tiles([folder], 5, 224, seed=3)
    assert len(tiles) == 5 and not notes
    for t in tiles:
        assert np.array_equal(t.pixels, tissue_image[t.y : t.y + 224, t.x : t.x + 224])
    for a in tiles:
        for b in tiles:
            assert a is b or abs(a.x - b.x) >= 224 or abs(a.y - b.y) >= 224
    again, _ = load_tiles([folder], 5, 224, seed=3)
    assert [(t.x, t.y) for t in again] == [(t.x, t.y) for t in tiles]
    other, _ = load_tiles([folder], 5, 224, seed=4)
    assert [(t.x, t.y) for t in other] != [(t.x, t.y) for t in tiles]


def test_more_tiles_than_tissue_holds_is_a_note(wsi_factory: WsiFactory) -> None:
    folder = wsi_factory("bench-native", tile_size=256, levels=3)
    tiles, notes = load_tiles([folder], 200, 224, seed=0)
    assert 0 < len(tiles) < 200
    assert any(f"{len(tiles)} of 200 tiles" in n for n in notes)


def test_inputs_that_are_not_slides_or_images_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_tiles([tmp_path / "missing"], 4, 224, 0)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match="holds no VL whole-slide series"):
        load_tiles([tmp_path], 4, 224, 0)
    with pytest.raises(UsageError, match="neither DICOM nor an image"):
        load_tiles([tmp_path / "notes.txt"], 4, 224, 0)


def test_batched_codecs_are_timed_as_one_batch(tissue_image: np.ndarray) -> None:
    class BatchedJpeg(JpegCodec):
        """The real JPEG codec behind the optional batch interface neural codecs have."""

        def encode_batch(self, tiles, settings):
            return [self.encode(t, settings) for t in tiles]

        def decode_batch(self, encoded):
            return [self.decode(b) for b in encoded]

    tiles = [np.ascontiguousarray(tissue_image[:224, x : x + 224]) for x in (0, 224, 448)]
    coded = code_tiles(BatchedJpeg(), EncodeSettings(quality=70), tiles, "both", workers=2)
    plain = code_tiles(JpegCodec(), EncodeSettings(quality=70), tiles, "both", workers=2)
    assert coded.encoded == plain.encoded
    assert coded.batched and not plain.batched
    assert len(coded.encode_single) == 1 and coded.encode_parallel is not None
    assert len(plain.encode_single) == 3 and plain.decode_parallel is not None


def test_bd_rate_of_a_curve_against_itself_and_a_tenth_cheaper_one() -> None:
    curve = [(0.4, 30.1), (0.7, 32.4), (1.1, 34.0), (1.9, 36.3), (2.6, 38.0)]
    cheaper = [(b * 0.9, q) for b, q in curve]
    dearer = [(b * 1.25, q) for b, q in curve]
    for method in ("pchip", "cubic"):
        assert bd_rate(curve, curve, method) == pytest.approx(0.0, abs=1e-9)
        assert bd_rate(curve, cheaper, method) == pytest.approx(-10.0, abs=1e-9)
        assert bd_rate(curve, dearer, method) == pytest.approx(25.0, abs=1e-9)
        assert bd_rate(curve[:3], cheaper[:3], method) == pytest.approx(-10.0, abs=1e-9)
    disjoint = [(b, q + 20) for b, q in curve]
    assert bd_rate(curve, disjoint) is None
    assert bd_rate(curve, curve[:1]) is None


def test_bd_rate_only_integrates_the_overlap() -> None:
    curve = [(0.4, 30.0), (0.8, 33.0), (1.6, 36.0), (3.2, 39.0)]
    # The same curve 10 % cheaper, but measured only from 33 dB up: still -10 %.
    partial = [(b * 0.9, q) for b, q in curve[1:]]
    assert bd_rate(curve, partial, "pchip") == pytest.approx(-10.0, abs=1e-9)


def test_value_at_bpp_is_linear_between_points_and_empty_outside() -> None:
    curve = [(1.0, 30.0), (0.5, 28.0), (2.0, 34.0)]
    assert value_at_bpp(curve, 0.75) == pytest.approx(29.0)
    assert value_at_bpp(curve, 1.5) == pytest.approx(32.0)
    assert value_at_bpp(curve, 2.0) == pytest.approx(34.0)
    assert value_at_bpp(curve, 0.25) is None and value_at_bpp(curve, 2.5) is None


def test_quality_lists_and_precompress_parse() -> None:
    assert parse_qualities("10:30:10") == (10, 20, 30)
    assert parse_qualities("10:35:10") == (10, 20, 30)
    assert parse_qualities("80,50,80") == (50, 80)
    assert parse_precompress("jpeg:80") == ("jpeg", 80)
    for bad in ("", "a,b", "50:10:10", "0:100:0", "101", "-5"):
        with pytest.raises(UsageError):
            parse_qualities(bad)
    for bad in ("jpeg", "jpeg:x", ":80", "jpeg:101"):
        with pytest.raises(UsageError):
            parse_precompress(bad)
    with pytest.raises(UsageError, match="unknown codec"):
        run_bench([Path(".")], BenchOptions(codecs=("no-such-codec",)))
    with pytest.raises(UsageError, match="no quality setting"):
        run_bench([Path(".")], BenchOptions(codecs=("jxl-recompress",)))


@pytest.mark.slow
def test_a_neural_codec_is_benchmarked_batched(
    wsi_factory: WsiFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cai` (CompressAI's bmshj2018-factorized) with a local weights file, through the CLI."""
    torch = pytest.importorskip("torch")
    zoo = pytest.importorskip("compressai.zoo")
    import wsitranscode.codecs.neural as neural_codecs  # registers cai* where not yet built in

    torch.manual_seed(0)
    net = zoo.bmshj2018_factorized(quality=neural_codecs.compressai_quality(30), pretrained=False)
    net.update()
    weights = tmp_path / "cai.pth.tar"
    torch.save(net.state_dict(), weights)
    folder = wsi_factory("bench-native", tile_size=256, levels=3)
    args = [
        "bench", str(folder), "-o", str(tmp_path / "out"), "--codecs", "jpeg,cai", "--q", "30,50",
        "--tiles", "3", "--metrics", "psnr", "--weights", str(weights), "--device", "cpu",
        "--json",
    ]  # fmt: skip
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    cai = [p for p in data["points"] if p["codec"] == "cai"]
    assert [p["quality"] for p in cai] == [30, 50], data["notes"]
    for p in cai:
        assert p["bpp"] > 0 and p["metrics"]["psnr"]["n"] == 3
        assert p["timing"]["batched"] and p["timing"]["decode_ms_all"] > 0
    assert {r["codec"] for r in data["bd_rates"]} == {"jpeg", "cai"}


def test_the_table_and_bd_rates_show_exactly_the_requested_metrics(
    wsi_factory: WsiFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = wsi_factory("bench-native", tile_size=256, levels=3)
    out = tmp_path / "out"
    args = [
        "bench", str(folder), "-o", str(out), "--codecs", "jpeg,webp", "--q", "50,85",
        "--tiles", "3", "--metrics", "psnr,ssim", "--timing", "single", "--workers", "2",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if "codec" in line and "bpp" in line)
    assert "PSNR" in header and "SSIM" in header and "MS-SSIM" not in header
    rows = [line for line in printed.splitlines() if re.match(r"│ webp +│ +\d+ +│", line)]
    assert len(rows) == 2, printed
    for row in rows:  # codec, q, bpp, PSNR, SSIM: every requested value is shown
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert float(cells[3]) > 20 and 0 < float(cells[4]) <= 1
    assert "ms-ssim" not in printed
    data = json.loads((out / "results.json").read_text())
    assert {r["metric"] for r in data["bd_rates"]} == {"psnr", "ssim"}
    with (out / "bd_rate.csv").open() as handle:
        assert {r["metric"] for r in csv.DictReader(handle)} == {"psnr", "ssim"}
