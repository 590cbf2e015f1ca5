"""Fault harness for `recode`: SIGKILL at random moments, a disk that fills at different points,
corrupted inputs. After each fault nothing on disk looks complete unless it is, the inputs are
untouched, and a rerun finishes with output byte-identical to an uninterrupted run's.

"Looks complete" means a visible `NNN-<flavor>.dcm` name (in a published series folder or in a
hidden staging folder) or a published series folder: writers use hidden temporary names until
their atomic rename, and series folders are renamed into place only when whole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.dicom_checks import REPRODUCIBLE_ENV, published_bytes, recode_command, tree_hashes
from wsitranscode.recode import RUN_RECORD_NAME, STAGING_PREFIX

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
ENV = REPRODUCIBLE_ENV
RECODE_ARGS = ("--codec", "jxl", "--q", "85", "--effort", "7", "--workers", "1")
KILLS = int(os.environ.get("WSITRANSCODE_FAULT_KILLS", "4"))
SEED = int(os.environ.get("WSITRANSCODE_FAULT_SEED", "7"))


def assert_nothing_looks_complete_unless_it_is(out: Path, clean: dict[str, bytes]) -> None:
    if not out.exists():
        return
    clean_series = {key.split("/")[0] for key in clean}
    for path in sorted(out.rglob("*")):
        if path.is_dir():
            if path.parent == out and not path.name.startswith("."):
                # a published series folder holds exactly the clean run's files
                names = sorted(p.name for p in path.iterdir())
                expected = sorted(k.split("/")[1] for k in clean if k.startswith(path.name + "/"))
                assert path.name in clean_series and names == expected, path
            continue
        if path.name == RUN_RECORD_NAME:
            json.loads(path.read_text())  # written atomically: always whole
            continue
        if path.name.startswith("."):
            continue  # a temporary name: incomplete and says so
        series = path.parent.name.removeprefix(STAGING_PREFIX)
        key = f"{series}/{path.name}"
        assert key in clean, f"unexpected visible file {path}"
        assert path.read_bytes() == clean[key], f"{path} looks complete but differs"


@pytest.fixture(scope="module")
def archive(wsi_factory, tmp_path_factory) -> Path:
    """Two slides (two series), each with three levels, a label and a thumbnail."""
    folder = tmp_path_factory.mktemp("faults") / "in"
    for seed in (1, 2):
        src = wsi_factory(
            f"faults-{seed}",
            transfer_syntax=JPEG_BASELINE,
            levels=3,
            tile_size=128,
            label=True,
            thumbnail=True,
            seed=seed,
            patient_id=f"FAULTS-{seed}",
        )
        shutil.copytree(src, folder / f"slide{seed}")
    return folder


@pytest.fixture(scope="module")
def clean_run(archive, tmp_path_factory) -> dict[str, bytes]:
    return _clean(archive, tmp_path_factory.mktemp("faults-clean") / "out")[0]


def _clean(archive: Path, out: Path) -> tuple[dict[str, bytes], tuple[float, float]]:
    """An uninterrupted run: its files, and when its work started (first staging folder; before
    that, Python starts and imports) and ended, in seconds from its start."""
    started = time.monotonic()
    proc = subprocess.Popen(
        recode_command(archive, out, *RECODE_ARGS),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    work_starts = None
    while proc.poll() is None:
        if work_starts is None and out.exists() and any(out.glob(STAGING_PREFIX + "*")):
            work_starts = time.monotonic() - started
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    elapsed = time.monotonic() - started
    files = published_bytes(out)
    assert len(files) == len(list(archive.rglob("*.dcm")))
    return files, (work_starts or 0.0, elapsed)


def _snapshot(out: Path) -> set[tuple[str, int]]:
    """Every file under OUT with its size: a killed run that did any work changed it."""
    if not out.exists():
        return set()
    return {(str(p.relative_to(out)), p.stat().st_size) for p in out.rglob("*") if p.is_file()}


def test_sigkill_at_random_moments_then_rerun(archive, tmp_path):
    # timed here, not in a fixture, so the kill window matches this moment's machine load
    clean, (work_starts, work_ends) = _clean(archive, tmp_path / "clean")
    before = tree_hashes(archive)
    out = tmp_path / "out"
    rng = random.Random(SEED)
    kills = mid_work = completed = 0
    for _ in range(KILLS):
        before_run = _snapshot(out)
        proc = subprocess.Popen(
            recode_command(archive, out, *RECODE_ARGS),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=rng.uniform(work_starts, work_ends))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            mid_work += _snapshot(out) != before_run
            assert_nothing_looks_complete_unless_it_is(out, clean)
            continue
        # the run finished before its kill: it must have finished the job, then start afresh
        assert proc.returncode == 0
        _assert_finished(out, clean)
        completed += 1
        shutil.rmtree(out)
    print(f"SIGKILL harness: {kills} kills ({mid_work} mid-work), {completed} runs completed")
    assert kills >= KILLS // 2, "most runs finished before their kill: the fixture is too fast"
    assert mid_work >= kills // 2, "most kills landed before any work: the kill window is off"
    rerun = subprocess.run(
        recode_command(archive, out, *RECODE_ARGS), env=ENV, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    _assert_finished(out, clean)
    assert tree_hashes(archive) == before


def _assert_finished(out: Path, clean: dict[str, bytes]) -> None:
    assert published_bytes(out) == clean
    assert_nothing_looks_complete_unless_it_is(out, clean)
    assert [p for p in out.rglob(".*") if p.name != RUN_RECORD_NAME] == []


# ---------------------------------------------------------------------- a disk that fills


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()

    def resize(kilobytes: int, remount: bool = False) -> None:
        options = f"{'remount,' if remount else ''}size={kilobytes}k"
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.decode()}")

    yield mount, resize
    subprocess.run(["umount", str(mount)], check=False, capture_output=True)


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.85])
def test_disk_full_at_different_points_then_rerun_with_space(
    archive, clean_run, small_disk, fraction
):
    clean = clean_run
    before = tree_hashes(archive)
    mount, resize = small_disk
    needed_kb = sum(len(b) for b in clean.values()) // 1024
    resize(max(int(needed_kb * fraction), 8))
    out = mount / "out"
    first = subprocess.run(
        recode_command(archive, out, *RECODE_ARGS), env=ENV, capture_output=True, text=True
    )
    assert first.returncode == 1
    assert "space" in first.stderr.lower()
    assert "Traceback" not in first.stderr
    assert_nothing_looks_complete_unless_it_is(out, clean)
    resize(needed_kb * 3 + 1024, remount=True)
    rerun = subprocess.run(
        recode_command(archive, out, *RECODE_ARGS), env=ENV, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert published_bytes(out) == clean
    assert [p for p in out.rglob(".*") if p.name != RUN_RECORD_NAME] == []
    assert tree_hashes(archive) == before


# ---------------------------------------------------------------------- corrupted inputs


def _corrupt_a_frame(path: Path, seed: int) -> None:
    from wsitranscode.dicom.frames import FrameReader

    with FrameReader(path) as reader:
        index = random.Random(seed).randrange(reader.number_of_frames)
        frame = reader.read_frame(index)
    data = bytearray(path.read_bytes())
    start = data.index(frame)
    data[start + 2 : start + len(frame) - 2] = b"\0" * (len(frame) - 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["frame", "truncated", "header"])
def test_corrupted_input_fails_its_series_then_rerun_after_repair(
    archive, clean_run, tmp_path, damage
):
    clean = clean_run
    folder = tmp_path / "in"
    shutil.copytree(archive, folder)
    victim = sorted((folder / "slide2").glob("level0.dcm"))[0]
    pristine = victim.read_bytes()
    if damage == "frame":
        _corrupt_a_frame(victim, seed=SEED)
    elif damage == "truncated":
        victim.write_bytes(pristine[: len(pristine) * 2 // 3])
    else:  # Rows' length says 65,520 bytes: the rest of the header is read as its value
        spoiled = bytearray(pristine)
        rows = spoiled.index(b"\x28\x00\x10\x00US")
        spoiled[rows + 6 : rows + 8] = (0xFFF0).to_bytes(2, "little")
        victim.write_bytes(bytes(spoiled))
    damaged = tree_hashes(folder)
    out = tmp_path / "out"
    first = subprocess.run(
        recode_command(folder, out, *RECODE_ARGS), env=ENV, capture_output=True, text=True
    )
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    assert all(len(line) < 2000 for line in first.stderr.splitlines())
    assert tree_hashes(folder) == damaged  # the run read, never wrote, its input
    assert_nothing_looks_complete_unless_it_is(out, clean)
    published = published_bytes(out)
    assert published and all(clean[key] == data for key, data in published.items())
    victim.write_bytes(pristine)  # the file is fetched again
    rerun = subprocess.run(
        recode_command(folder, out, *RECODE_ARGS), env=ENV, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert published_bytes(out) == clean
