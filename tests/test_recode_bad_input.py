"""Bad input: one clear line naming the file (and frame), the series failed, the rest of the batch
done, nothing partial on disk, and the inputs byte-identical afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from tests.dicom_checks import tree_hashes, wipe_frame_body
from wsitranscode.cli import main
from wsitranscode.recode import RUN_RECORD_NAME

EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture
def batch(wsi_factory, tmp_path):
    """A folder with two good series; each test spoils one of them (a copy, never the cache)."""
    folder = tmp_path / "in"
    for name, seed in (("good", 11), ("spoiled", 12)):
        src = wsi_factory(f"bad-input-{name}", transfer_syntax=JPEG_BASELINE, levels=2, seed=seed)
        shutil.copytree(src, folder / name)
    return folder


def _run(folder: Path, out: Path, *extra: str) -> tuple[int, dict]:
    code = main(["recode", str(folder), "-o", str(out), "--codec", "jxl", "--workers", "2", *extra])
    record_path = out / RUN_RECORD_NAME
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    return code, record


def _by_status(record: dict) -> dict[str, list[dict]]:
    result: dict[str, list[dict]] = {}
    for series in record["series"]:
        result.setdefault(series["status"], []).append(series)
    return result


def _assert_one_failed_one_ok(code: int, record: dict, out: Path, must_name: str) -> str:
    assert code == 1
    status = _by_status(record)
    assert len(status["ok"]) == 1 and len(status["failed"]) == 1
    error = status["failed"][0]["error"]
    assert "\n" not in error and must_name in error
    published = [p for p in out.iterdir() if p.is_dir()]
    assert [p.name for p in published] == [status["ok"][0]["output_dir"]]  # nothing partial
    return error


def _first_file(folder: Path) -> Path:
    return sorted(folder.rglob("*.dcm"))[0]


def test_non_dicom_files_are_skipped_and_counted(batch, tmp_path):
    (batch / "good" / "notes.txt").write_text("not dicom")
    from pydicom.fileset import FileSet

    FileSet().write(batch / "good")  # a real, empty DICOMDIR
    before = tree_hashes(batch)
    code, record = _run(batch, tmp_path / "out")
    assert code == 0
    assert {Path(s["path"]).name for s in record["skipped_files"]} >= {"notes.txt", "DICOMDIR"}
    assert tree_hashes(batch) == before


def test_truncated_file_fails_its_series_only(batch, tmp_path):
    victim = _first_file(batch / "spoiled")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])
    before = tree_hashes(batch)
    code, record = _run(batch, tmp_path / "out")
    _assert_one_failed_one_ok(code, record, tmp_path / "out", victim.name)
    assert tree_hashes(batch) == before


def test_frame_that_does_not_decode_is_named(batch, tmp_path):
    victim = next(
        p
        for p in sorted((batch / "spoiled").rglob("*.dcm"))
        if int(pydicom.dcmread(p, stop_before_pixels=True).NumberOfFrames) > 2
    )
    wipe_frame_body(victim, 1)
    code, record = _run(batch, tmp_path / "out")
    error = _assert_one_failed_one_ok(code, record, tmp_path / "out", victim.name)
    assert "frame 1" in error


def _rewrite(path: Path, edit) -> None:
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path, enforce_file_format=True)


def test_missing_geometry_attribute(batch, tmp_path):
    victim = _first_file(batch / "spoiled")
    _rewrite(victim, lambda ds: delattr(ds, "TotalPixelMatrixColumns"))
    code, record = _run(batch, tmp_path / "out")
    error = _assert_one_failed_one_ok(code, record, tmp_path / "out", victim.name)
    assert "TotalPixelMatrixColumns" in error


def test_unsupported_transfer_syntax(batch, tmp_path):
    victim = _first_file(batch / "spoiled")

    def to_mpeg2(ds):
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"

    _rewrite(victim, to_mpeg2)
    code, record = _run(batch, tmp_path / "out")
    error = _assert_one_failed_one_ok(code, record, tmp_path / "out", victim.name)
    assert "MPEG" in error or "1.2.840.10008.1.2.4.100" in error


def test_conflicting_instances_of_one_series(batch, tmp_path):
    victim = _first_file(batch / "spoiled")
    twin = victim.with_name("twin.dcm")
    shutil.copy(victim, twin)
    _rewrite(twin, lambda ds: setattr(ds, "StudyInstanceUID", pydicom.uid.generate_uid()))
    code, record = _run(batch, tmp_path / "out")
    _assert_one_failed_one_ok(code, record, tmp_path / "out", "twin.dcm")


def test_output_inside_input_is_refused(batch):
    before = tree_hashes(batch)
    code = main(["recode", str(batch), "-o", str(batch / "out"), "--codec", "jxl"])
    assert code == 2
    assert not (batch / "out").exists()
    assert tree_hashes(batch) == before


def test_existing_output_without_overwrite(batch, tmp_path):
    out = tmp_path / "out"
    assert _run(batch, out)[0] == 0
    (out / RUN_RECORD_NAME).unlink()  # outputs that this run did not record
    code, record = _run(batch, out)
    assert code == 1
    assert all("--overwrite" in s["error"] for s in record["series"])
    assert _run(batch, out, "--overwrite")[0] == 0


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_leaves_nothing_partial(batch, tiny_disk, capsys):
    before = tree_hashes(batch)
    out = tiny_disk / "out"
    code = main(["recode", str(batch), "-o", str(out), "--codec", "jxl", "--lossless", "--json"])
    assert code == 1
    result = json.loads(capsys.readouterr().out)
    failed = [s for s in result["series"] if s["status"] == "failed"]
    assert failed and all("space" in s["error"].lower() for s in failed)
    assert not [p for p in out.iterdir() if p.name.startswith(".partial")]
    assert not [p for p in out.rglob(".*") if p.is_file()]
    ok_dirs = {s["output_dir"] for s in result["series"] if s["status"] == "ok"}
    assert {p.name for p in out.iterdir() if p.is_dir()} == ok_dirs
    assert tree_hashes(batch) == before


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("--workers", "-1"), "--workers"),
        (("--workers", "0"), "--workers"),
        (("--batch-frames", "0"), "--batch-frames"),
        (("--q", "85.5"), "--q"),
        (("--q", "101"), "--q"),
    ],
)
def test_bad_numbers_are_usage_errors_naming_the_option(batch, tmp_path, capsys, args, names):
    out = tmp_path / "out"
    assert main(["recode", str(batch), "-o", str(out), "--codec", "jxl", *args]) == 2
    err = capsys.readouterr().err
    assert names in err and args[1] in err
    assert "_quality" not in err and "invalid" not in err
    assert not out.exists()


def test_other_options_say_which_option_differs(batch, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(batch, out, "--only", "volume")[0] == 0
    capsys.readouterr()
    code, _ = _run(batch, out, "--only", "volume", "--q", "60", "--effort", "3")
    assert code == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()  # no progress drawn before the usage error
    assert "all series" not in captured.err + captured.out
    assert "{" not in line
    assert "--q 85 there, 60 now" in line and "--effort" in line and "--overwrite" in line


def test_failed_series_shows_its_input_size(batch, tmp_path, capsys):
    victim = _first_file(batch / "spoiled")
    twin = victim.with_name("twin.dcm")
    shutil.copy(victim, twin)
    _rewrite(twin, lambda ds: setattr(ds, "StudyInstanceUID", pydicom.uid.generate_uid()))
    size = sum(p.stat().st_size for p in (batch / "spoiled").rglob("*.dcm"))
    code = main(["recode", str(batch), "-o", str(tmp_path / "out"), "--codec", "jxl"])
    assert code == 1
    rows = [line for line in capsys.readouterr().out.splitlines() if " failed " in line]
    (row,) = rows
    cells = [cell.strip() for cell in row.split("│")]
    assert f"{size / 1e6:.2f}" in cells


def test_an_input_without_wsi_series_is_said_and_links_get_their_option(batch, tmp_path, capsys):
    """Only a link to a slide: the empty run says so, the skipped line names the
    option that follows links, and ls says the same and lists the slide with it."""
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "slide.dcm").symlink_to(_first_file(batch / "good"))
    code, record = _run(linked, tmp_path / "out")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 0 and record["series"] == []
    assert "skipped 1 file: 1 symbolic link (--follow-symlinks follows them)" in err
    assert f"no VL Whole Slide Microscopy series found in {linked}" in err

    assert main(["ls", str(linked)]) == 0
    assert "--follow-symlinks follows them" in capsys.readouterr().out
    assert main(["ls", str(linked), "--follow-symlinks", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["series"]) == 1


def test_ls_exits_1_on_a_file_that_looks_like_dicom_but_does_not_read(batch, capsys):
    """As recode does: such a file may be a missing level of a slide."""
    victim = _first_file(batch / "spoiled")
    data = bytearray(victim.read_bytes())
    data[132:400] = b"\xff" * 268  # the file meta is destroyed; the DICM marker remains
    victim.write_bytes(bytes(data))
    assert main(["ls", str(batch)]) == 1
    assert "unreadable" in capsys.readouterr().out


def test_ls_prints_each_problem_whole_on_one_line(batch, capsys):
    """Problems go below the table, unwrapped, so the UIDs in them can be copied."""
    victim = _first_file(batch / "spoiled")
    twin = victim.with_name("twin.dcm")
    shutil.copy(victim, twin)
    _rewrite(twin, lambda ds: setattr(ds, "StudyInstanceUID", pydicom.uid.generate_uid()))
    assert main(["ls", str(batch), "--json"]) == 1
    problems = [p for series in json.loads(capsys.readouterr().out)["series"]
                for p in series["problems"]]  # fmt: skip
    assert main(["ls", str(batch)]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("problem series")]
    assert problems and len(lines) == len(problems)
    assert all(line.endswith(f": {problem}") for line, problem in zip(lines, problems, strict=True))
