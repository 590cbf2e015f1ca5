"""End-to-end recode: conformance (dciodvfy), third-party readers, derived header, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.dicom_checks import dciodvfy_errors, published_outputs, source_output_pairs
from wsitranscode.cli import main
from wsitranscode.codecs.base import EncodeSettings
from wsitranscode.recode import RUN_RECORD_NAME, RecodeOptions, recode

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT = "1.2.840.10008.1.2.1"

# (codec, lossless, expected transfer syntax, expected photometric)
TARGETS = [
    ("jpeg", False, "1.2.840.10008.1.2.4.50", "YBR_FULL_422"),
    ("jxl", False, "1.2.840.10008.1.2.4.112", "RGB"),
    ("jxl", True, "1.2.840.10008.1.2.4.110", "RGB"),
    ("j2k", False, "1.2.840.10008.1.2.4.91", "YBR_ICT"),
    ("j2k", True, "1.2.840.10008.1.2.4.90", "YBR_RCT"),
    ("htj2k", False, "1.2.840.10008.1.2.4.203", "YBR_ICT"),
    ("htj2k", True, "1.2.840.10008.1.2.4.201", "YBR_RCT"),
    ("webp", False, None, "RGB"),
]


def _recode(src: Path, out: Path, codec: str, *extra: str) -> int:
    return main(["recode", str(src), "-o", str(out), "--codec", codec, "--workers", "2", *extra])


@pytest.fixture(scope="module")
def native_slide(wsi_factory):
    return wsi_factory(
        "recode-native", transfer_syntax=EXPLICIT, levels=2, label=True, thumbnail=True
    )


@pytest.mark.parametrize(("codec", "lossless", "syntax", "photometric"), TARGETS)
def test_every_codec_gives_valid_readable_dicom(
    native_slide, tmp_path, codec, lossless, syntax, photometric
):
    out = tmp_path / "out"
    args = ["--lossless"] if lossless else ["--q", "80"]
    assert _recode(native_slide, out, codec, *args) == 0
    sources = sorted(native_slide.rglob("*.dcm"))
    outputs = published_outputs(out)
    assert len(outputs) == len(sources)
    for path in outputs:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if syntax is not None:
            assert ds.file_meta.TransferSyntaxUID == syntax
            assert dciodvfy_errors(path) == [], path
        else:
            assert "NON-STANDARD" in ds.SeriesDescription.upper()
        assert ds.PhotometricInterpretation == photometric
        assert ds.ImageType[0] == "DERIVED"
        assert ds.LossyImageCompression == ("00" if lossless else "01")
    _assert_same_pyramid(native_slide, out, check_wsidicom=syntax is not None)


def _assert_same_pyramid(src: Path, out: Path, check_wsidicom: bool) -> None:
    def geometry(folder: Path) -> list[tuple]:
        rows = []
        for path in sorted(folder.rglob("*.dcm")):
            if path.parent.name.startswith(".partial"):
                continue
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            rows.append(
                (
                    ds.ImageType[2],
                    ds.TotalPixelMatrixColumns,
                    ds.TotalPixelMatrixRows,
                    ds.Columns,
                    ds.Rows,
                    int(ds.NumberOfFrames),
                )
            )
        return sorted(rows)

    assert geometry(src) == geometry(out)
    if check_wsidicom:
        from wsidicom import WsiDicom

        series_dir = next(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
        with WsiDicom.open(src) as before, WsiDicom.open(series_dir) as after:
            assert [lv.size.to_tuple() for lv in before.levels] == [
                lv.size.to_tuple() for lv in after.levels
            ]
            tile = after.read_tile(0, (0, 0))
            assert tile.size == before.read_tile(0, (0, 0)).size


def test_outputs_decode_through_pydicom_and_highdicom(native_slide, tmp_path):
    import highdicom as hd

    from wsitranscode.dicom.syntaxes import register_with_pydicom

    register_with_pydicom()
    out = tmp_path / "out"
    assert _recode(native_slide, out, "jxl", "--lossless") == 0
    for src_path, out_path in source_output_pairs(native_slide, out):
        src = pydicom.dcmread(src_path)
        dst = pydicom.dcmread(out_path)
        np.testing.assert_array_equal(src.pixel_array, dst.pixel_array)
        image = hd.imread(out_path)
        assert image.number_of_frames == int(src.NumberOfFrames)


def test_derived_header_references_its_source(native_slide, tmp_path):
    out = tmp_path / "out"
    assert _recode(native_slide, out, "jxl", "--q", "85") == 0
    src = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p
        for p in native_slide.rglob("*.dcm")
    }
    series_uids = set()
    for path in published_outputs(out):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ref = ds.SourceImageSequence[0]
        source = pydicom.dcmread(src[ref.ReferencedSOPInstanceUID], stop_before_pixels=True)
        assert ds.SOPInstanceUID != source.SOPInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        if "PyramidUID" in source:  # labels and overviews have none
            assert ds.PyramidUID != source.PyramidUID
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
        assert ds.DerivationCodeSequence[0].CodeValue == "113040"
        assert _values(ds, "LossyImageCompressionMethod")[-1] == "ISO_18181_1"
        assert float(_values(ds, "LossyImageCompressionRatio")[-1]) > 1.0
        series_uids.add(ds.SeriesInstanceUID)
    assert len(series_uids) == 1


def _values(ds: pydicom.Dataset, keyword: str) -> list:
    value = ds[keyword].value
    return list(value) if ds[keyword].VM > 1 else [value]


def test_output_bytes_do_not_depend_on_workers(native_slide, tmp_path):
    one, two = tmp_path / "w1", tmp_path / "w2"
    options = dict(codec="jxl", settings=EncodeSettings(quality=80))
    from datetime import UTC, datetime

    fixed = datetime(2026, 1, 1, tzinfo=UTC)
    recode(native_slide, one, RecodeOptions(workers=1, timestamp=fixed, **options))
    recode(native_slide, two, RecodeOptions(workers=2, timestamp=fixed, **options))
    a, b = published_outputs(one), published_outputs(two)
    assert [p.relative_to(one) for p in a] == [p.relative_to(two) for p in b]
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes(), x.name


def test_jxl_recompress_restores_jpeg_bytes(wsi_factory, tmp_path):
    from wsitranscode.codecs.base import get_codec
    from wsitranscode.dicom.frames import FrameReader

    src = wsi_factory("recode-jpeg", transfer_syntax=JPEG_BASELINE, levels=2, label=False)
    out = tmp_path / "out"
    assert _recode(src, out, "jxl-recompress") == 0
    codec = get_codec("jxl-recompress")
    for src_path, out_path in source_output_pairs(src, out):
        assert dciodvfy_errors(out_path) == []
        with FrameReader(src_path) as a, FrameReader(out_path) as b:
            assert b.transfer_syntax_uid == "1.2.840.10008.1.2.4.111"
            for i in range(a.number_of_frames):
                assert codec.restore_source(b.read_frame(i)) == a.read_frame(i)
        assert out_path.stat().st_size < src_path.stat().st_size


def test_run_record_and_json(native_slide, tmp_path, capsys):
    out = tmp_path / "out"
    assert _recode(native_slide, out, "webp", "--q", "70", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    assert printed["series"][0]["summary"] == record["series"][0]["summary"]
    series = record["series"][0]
    assert series["status"] == "ok"
    for inst in series["instances"]:
        assert inst["status"] == "ok"
        assert (
            inst["bytes_out"] == (out / series["output_dir"] / inst["output_path"]).stat().st_size
        )
        assert inst["psnr_mean"] is None or 25 < inst["psnr_mean"] < 60
        assert inst["compression_ratio"] > 1
    assert record["warnings"] and "private transfer syntax" in record["warnings"][0]


def test_rerun_resumes_and_overwrite_redoes(native_slide, tmp_path):
    out = tmp_path / "out"
    assert _recode(native_slide, out, "jxl") == 0
    first = {p: p.stat().st_mtime_ns for p in published_outputs(out)}
    assert _recode(native_slide, out, "jxl") == 0
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    assert record["series"][0]["status"] == "done-before"
    assert {p: p.stat().st_mtime_ns for p in published_outputs(out)} == first
    assert _recode(native_slide, out, "jpeg") == 2  # other options into the same folder
    assert _recode(native_slide, out, "jxl", "--overwrite") == 0
    assert all(p.stat().st_mtime_ns != first[p] for p in published_outputs(out))


def test_help_does_not_import_heavy_modules():
    import subprocess
    import sys

    code = (
        "import sys; from wsitranscode.cli import main\n"
        "try: main(['recode', '--help'])\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'compressai', 'idc_index', 'pandas') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: wsitranscode recode" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_ls_and_classic_recode_do_not_import_heavy_modules(native_slide, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from wsitranscode.cli import main\n"
        f"main(['ls', {str(native_slide)!r}])\n"
        f"main(['recode', {str(native_slide)!r}, '-o', {str(tmp_path / 'o')!r},"
        " '--codec', 'jxl'])\n"
        "heavy = ('torch', 'compressai', 'idc_index', 'pandas', 'lpips', 'matplotlib')\n"
        "print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_an_input_replaced_between_runs_in_one_process_is_read_afresh(wsi_factory, tmp_path):
    import os
    import shutil

    from wsitranscode.dicom.decode import PixelInfo, decode_frame
    from wsitranscode.dicom.frames import FrameReader

    def level0(seed: int) -> Path:
        from wsitranscode.synth import synthetic_tissue

        slide = wsi_factory(f"replaced-{seed}", image=synthetic_tissue(300, 400, seed=seed),
                            transfer_syntax=EXPLICIT, levels=1, label=False, thumbnail=False,
                            seed=seed)  # fmt: skip
        return next(slide.rglob("*.dcm"))

    def first_frame(path: Path) -> np.ndarray:
        with FrameReader(path) as reader:
            return decode_frame(reader.read_frame(0), PixelInfo.from_dataset(reader.header))

    folder = tmp_path / "in"
    folder.mkdir()
    target = folder / "slide.dcm"
    options = RecodeOptions(codec="jxl", settings=EncodeSettings(lossless=True))
    shutil.copy(level0(1), target)
    recode(folder, tmp_path / "one", options)
    os.replace(shutil.copy(level0(2), tmp_path / "other.dcm"), target)  # a new file, same path
    recode(folder, tmp_path / "two", options)
    (second,) = published_outputs(tmp_path / "two")
    assert not np.array_equal(first_frame(level0(1)), first_frame(target))
    np.testing.assert_array_equal(first_frame(second), first_frame(target))


def _series_dirs(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")}


def test_overwrite_with_other_options_replaces_the_earlier_series(native_slide, tmp_path):
    from wsitranscode.dicom.scan import scan

    out = tmp_path / "out"
    assert _recode(native_slide, out, "jxl", "--only", "volume") == 0
    earlier = _series_dirs(out)
    (out / "notes.txt").write_text("not ours")
    (out / "mine").mkdir()
    assert _recode(native_slide, out, "jxl", "--q", "60", "--only", "volume", "--overwrite") == 0
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    recorded = {s["output_dir"] for s in record["series"]}
    assert _series_dirs(out) == recorded | {"mine"}
    assert not recorded & earlier
    assert (out / "notes.txt").read_text() == "not ours"
    assert len(scan(out).series) == 1  # what validate sees: the new series only


def test_bpp_run_records_the_quality_it_chose(native_slide, tmp_path):
    out = tmp_path / "out"
    assert _recode(native_slide, out, "jxl", "--bpp", "1.5", "--only", "volume") == 0
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    (series,) = record["series"]
    chosen = series["rate_control"]["quality"]
    assert chosen != 85
    assert series["quality"] == chosen
    assert [i["quality"] for i in series["instances"]] == [chosen] * len(series["instances"])
    assert record["options"]["fingerprint"]["quality"] is None  # no fixed --q
    for path in published_outputs(out):
        description = pydicom.dcmread(path, stop_before_pixels=True).DerivationDescription
        assert f"JPEG XL q{chosen} " in description and "chosen for 1.5 bpp" in description


def test_fixed_quality_is_recorded_per_series(native_slide, tmp_path):
    out = tmp_path / "out"
    assert _recode(native_slide, out, "jxl", "--q", "70", "--only", "volume") == 0
    (series,) = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    assert series["quality"] == 70 and {i["quality"] for i in series["instances"]} == {70}


def test_q_and_bpp_together_are_refused(native_slide, tmp_path, capsys):
    out = tmp_path / "out"
    assert _recode(native_slide, out, "jxl", "--q", "80", "--bpp", "0.5") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--q" in line and "--bpp" in line
    assert not (out / RUN_RECORD_NAME).exists()


@pytest.mark.parametrize(
    ("codec", "extra", "why"),
    [("jxl", ("--lossless",), "--lossless"), ("jxl-recompress", (), "jxl-recompress")],
)
def test_q_that_has_no_effect_is_warned_about(wsi_factory, tmp_path, capsys, codec, extra, why):
    src = wsi_factory("recode-jpeg", transfer_syntax=JPEG_BASELINE, levels=2, label=False)
    out = tmp_path / "out"
    assert _recode(src, out, codec, "--q", "60", "--only", "volume", *extra) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "--q" in warnings[0] and "ignored" in warnings[0] and why in warnings[0]
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    assert record["options"]["fingerprint"]["quality"] is None
    assert json.loads((out / RUN_RECORD_NAME).read_text())["series"][0]["quality"] is None


def _low_range_16_bit(folder: Path) -> Path:
    """A 16-bit MONOCHROME2 slide whose samples use only 0..24 (like highdicom's grayscale
    sample): q and PSNR, relative to 65535, hide any loss there."""
    from tests.reader_builders import write_native, wsi_dataset

    folder.mkdir()
    ds = wsi_dataset(rows=32, columns=32, total_columns=64, total_rows=64, samples=1, bits=16,
                     photometric="MONOCHROME2")  # fmt: skip
    rng = np.random.default_rng(7)
    write_native(folder / "level0.dcm", ds, [rng.integers(0, 25, (32, 32), np.uint16)] * 4)
    return folder


def test_lossy_loss_in_low_range_16_bit_data_is_measured_and_warned(tmp_path, capsys):
    source = _low_range_16_bit(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["recode", str(source), "-o", str(out), "--codec", "jxl", "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "samples reach only 24 of 65535" in " ".join(err.split()), err
    (series,) = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    (instance,) = series["instances"]
    assert instance["source_max"] == 24 and instance["max_abs_error"] >= 3  # a tenth of 24
    assert instance["psnr_min"] > 60  # what PSNR at the 16-bit peak says: nothing to see

    lossless = tmp_path / "lossless"
    assert main(["recode", str(source), "-o", str(lossless), "--codec", "jxl", "--lossless"]) == 0
    assert "samples reach only" not in capsys.readouterr().err
    (series,) = json.loads((lossless / RUN_RECORD_NAME).read_text())["series"]
    assert series["instances"][0]["max_abs_error"] == 0


def test_eight_bit_frames_skip_the_extra_error_measures(tmp_path):
    from tests.reader_builders import write_native, wsi_dataset

    (tmp_path / "in").mkdir()
    ds = wsi_dataset(rows=32, columns=32, total_columns=32, total_rows=32)
    write_native(tmp_path / "in" / "a.dcm", ds, [np.full((32, 32, 3), 90, np.uint8)])
    result = recode(tmp_path / "in", tmp_path / "out", RecodeOptions("jpeg", EncodeSettings()))
    (instance,) = result.series[0].instances
    assert instance.max_abs_error is None and instance.source_max is None


def test_overwrite_also_replaces_series_of_runs_before_the_last(
    native_slide, wsi_factory, tmp_path
):
    """Two inputs recoded into one OUT with the same options, then --overwrite: OUT holds only
    what the new record describes (the first input's series was left behind when each run's
    record named only its own series)."""
    other = wsi_factory("recode-other", transfer_syntax=EXPLICIT, levels=1, label=False,
                        thumbnail=False, seed=9)  # fmt: skip
    out = tmp_path / "out"
    assert _recode(native_slide, out, "jxl", "--only", "volume") == 0
    assert _recode(other, out, "jxl", "--only", "volume") == 0
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    assert [s.get("carried_over", False) for s in record["series"]] == [False, True]
    assert _series_dirs(out) == {s["output_dir"] for s in record["series"]}

    assert _recode(other, out, "jxl", "--q", "60", "--only", "volume", "--overwrite") == 0
    (series,) = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    assert _series_dirs(out) == {series["output_dir"]}


def test_full_range_16_bit_data_gets_no_low_range_warning(tmp_path, capsys):
    """Errors of thousands on data that spans 0..65535 are what q means there, not hidden loss."""
    from tests.reader_builders import write_native, wsi_dataset

    (tmp_path / "in").mkdir()
    ds = wsi_dataset(rows=32, columns=32, total_columns=64, total_rows=64, samples=1, bits=16,
                     photometric="MONOCHROME2")  # fmt: skip
    rng = np.random.default_rng(8)
    tiles = [rng.integers(0, 65536, (32, 32), np.uint16) for _ in range(4)]
    write_native(tmp_path / "in" / "level0.dcm", ds, tiles)
    out = tmp_path / "out"
    assert main(["recode", str(tmp_path / "in"), "-o", str(out), "--codec", "jxl"]) == 0
    assert "samples reach only" not in capsys.readouterr().err
    (series,) = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    assert series["instances"][0]["source_max"] > 60000


def test_a_record_of_the_earlier_format_says_why_it_cannot_resume(native_slide, tmp_path, capsys):
    """Record version 1 kept --q for lossless runs; such a run cannot resume under version 2."""
    out = tmp_path / "out"
    assert _recode(native_slide, out, "jxl", "--lossless", "--only", "volume") == 0
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    assert record["version"] == 2
    record["version"] = 1
    record["options"]["fingerprint"]["quality"] = 85
    (out / RUN_RECORD_NAME).write_text(json.dumps(record))
    capsys.readouterr()
    assert _recode(native_slide, out, "jxl", "--lossless", "--only", "volume") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "record version 1" in err and "--q 85 there, not set now" in err and "--overwrite" in err
    assert _recode(native_slide, out, "jxl", "--lossless", "--only", "volume", "--overwrite") == 0


def test_options_a_codec_ignores_are_warned_and_do_not_change_the_output(
    native_slide, tmp_path, capsys
):
    """--effort for jpeg: same UIDs and bytes as without it (it used to make new UIDs and refuse
    the rerun without it), and a warning says it is ignored."""
    plain, effort = tmp_path / "plain", tmp_path / "effort"
    assert _recode(native_slide, plain, "jpeg", "--only", "volume") == 0
    capsys.readouterr()
    assert _recode(native_slide, effort, "jpeg", "--only", "volume", "--effort", "9") == 0
    assert "--effort ignored by jpeg" in " ".join(capsys.readouterr().err.split())
    names = lambda out: sorted(p.relative_to(out) for p in published_outputs(out))  # noqa: E731
    assert names(plain) == names(effort)
    assert _recode(native_slide, effort, "jpeg", "--only", "volume") == 0  # resumes


def test_a_weights_file_is_named_by_its_content_not_its_path(tmp_path):
    """Two different models at one path must not give the same UIDs (a PACS would take two
    different images for one), and one model at two paths may resume."""
    from wsitranscode.recode import file_identity, output_options

    codec = type("Neural", (), {"option_keys": None})()
    model = tmp_path / "m.pt"
    model.write_bytes(b"first weights")
    settings = EncodeSettings(extra=(("model", str(model)), ("device", "cpu")))
    first = output_options(codec, settings)
    assert first == {"model": file_identity(str(model))} and first["model"].startswith("sha256:")
    model.write_bytes(b"other weights, same path")
    assert output_options(codec, settings) != first
    moved = tmp_path / "moved.pt"
    moved.write_bytes(b"first weights")
    assert output_options(codec, EncodeSettings(extra=(("model", str(moved)),))) == first
