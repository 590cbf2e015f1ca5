"""A run killed midway (SIGKILL) leaves nothing that looks complete, and a rerun finishes the job
with output byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.dicom_checks import REPRODUCIBLE_ENV, published_bytes, recode_command
from wsitranscode.recode import RUN_RECORD_NAME, STAGING_PREFIX

ENV = REPRODUCIBLE_ENV
RECODE_ARGS = ("--codec", "jxl", "--q", "90", "--effort", "9", "--workers", "1")


def _instances_done(out: Path) -> int:
    try:
        record = json.loads((out / RUN_RECORD_NAME).read_text())
    except (OSError, ValueError):
        return 0
    return sum(i["status"] == "ok" for s in record["series"] for i in s["instances"])


@pytest.fixture(scope="module")
def slide(wsi_factory):
    return wsi_factory(
        "resume", transfer_syntax="1.2.840.10008.1.2.1", levels=3, label=True, thumbnail=True
    )


def test_killed_run_resumes_to_identical_output(slide, tmp_path):
    clean = tmp_path / "clean"
    subprocess.run(
        recode_command(slide, clean, *RECODE_ARGS), env=ENV, check=True, capture_output=True
    )
    expected = published_bytes(clean)
    assert len(expected) == len(list(slide.rglob("*.dcm")))

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        recode_command(slide, out, *RECODE_ARGS),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while _instances_done(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail("the run finished before it could be killed; make the fixture slower")
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # Nothing looks complete: the series is still in its hidden staging folder.
    assert published_bytes(out) == {}
    assert any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())

    rerun = subprocess.run(
        recode_command(slide, out, *RECODE_ARGS), env=ENV, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert published_bytes(out) == expected
    assert not any(p.name.startswith(".") and p.name != RUN_RECORD_NAME for p in out.iterdir())
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    statuses = [i["status"] for s in record["series"] for i in s["instances"]]
    assert "done-before" in statuses and "ok" in statuses


# A slow single-instance series: 336 frames of 48x48 at JPEG XL effort 9 take a few seconds on
# one worker, in small batches, so an interruption lands mid-instance.
SLOW_ARGS = ("--codec", "jxl", "--effort", "9", "--workers", "1", "--batch-frames", "4")


@pytest.fixture(scope="module")
def slow_slide(wsi_factory):
    return wsi_factory(
        "resume-slow",
        transfer_syntax="1.2.840.10008.1.2.1",
        tile_size=48,
        levels=1,
        label=False,
        thumbnail=False,
    )


def _start_and_wait_for_staging(
    src: Path, out: Path, *args: str, own_group: bool = False
) -> subprocess.Popen:
    """A recode in a child process, returned once it has started work on a series. With
    `own_group`, the child leads a process group, as a terminal's foreground job does."""
    proc = subprocess.Popen(
        recode_command(src, out, *args),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=own_group,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(out.glob(STAGING_PREFIX + "*")):
            return proc
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"the run never staged a series: {proc.communicate()}")


def _published_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def _assert_interrupted_then_resumed(
    proc: subprocess.Popen, src: Path, out: Path, args: tuple[str, ...]
) -> None:
    """A run stopped by Ctrl-C: exit 130, no traceback, its one series recorded interrupted and
    not published; then a rerun with the same options finishes it."""
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    assert [s["status"] for s in record["series"]] == ["interrupted"]
    assert _published_dirs(out) == []
    rerun = subprocess.run(recode_command(src, out, *args), env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr


def test_sigint_stops_promptly_and_a_rerun_resumes(slow_slide, tmp_path):
    out = tmp_path / "out"
    proc = _start_and_wait_for_staging(slow_slide, out, *SLOW_ARGS)
    time.sleep(0.3)  # some batches done, most still queued
    interrupted_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    stop_seconds = time.monotonic() - interrupted_at
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr

    # nothing incomplete is published, and the record says so
    assert _published_dirs(out) == []
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    assert [s["status"] for s in record["series"]] == ["interrupted"]

    started = time.monotonic()
    rerun = subprocess.run(
        recode_command(slow_slide, out, *SLOW_ARGS), env=ENV, capture_output=True, text=True
    )
    rerun_seconds = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    (series,) = record["series"]
    assert series["status"] == "ok"
    assert _published_dirs(out) == [series["output_dir"]]
    assert len(published_bytes(out)) == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # the interrupted run stopped after the batches already running, not after the series
    assert stop_seconds < rerun_seconds / 3, (stop_seconds, rerun_seconds)


def test_rerun_with_other_options_removes_a_killed_runs_staging(slow_slide, tmp_path):
    out = tmp_path / "out"
    proc = _start_and_wait_for_staging(slow_slide, out, *SLOW_ARGS)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (stale,) = [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]
    assert not (out / RUN_RECORD_NAME).exists()  # killed before its first instance was done

    rerun = subprocess.run(
        recode_command(slow_slide, out, "--codec", "jxl", "--q", "60", "--effort", "1"),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert not stale.exists()
    assert stale.name in rerun.stderr and "removed" in rerun.stderr
    (series,) = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    assert _published_dirs(out) == [series["output_dir"]]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_second_run_into_the_same_output_is_refused_while_one_runs(slow_slide, tmp_path):
    out = tmp_path / "out"
    first = _start_and_wait_for_staging(slow_slide, out, *SLOW_ARGS)
    try:
        second = subprocess.run(
            recode_command(slow_slide, out, "--codec", "jxl", "--q", "60", "--overwrite"),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert first.poll() is None, "the first run ended before the second started"
    finally:
        first.kill()
        first.communicate()
    assert second.returncode == 2
    (line,) = second.stderr.strip().splitlines()
    assert "another" in line and str(out) in line
    assert any(out.glob(STAGING_PREFIX + "*"))  # the first run's staging was left alone


def test_links_planted_in_the_output_are_never_followed(slow_slide, tmp_path, capsys):
    """A link at the lock's name must not be truncated through, and a link at a series' staging
    name must not be written into or cleaned up: both point outside OUT."""
    from wsitranscode.cli import main
    from wsitranscode.codecs.base import EncodeSettings
    from wsitranscode.dicom.scan import scan
    from wsitranscode.layout import LOCK_NAME
    from wsitranscode.recode import RecodeOptions, new_series_uid

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("important data")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(precious / "notes.txt")
    args = ["recode", str(slow_slide), "-o", str(out), "--codec", "jxl", "--q", "60"]
    assert main(args) == 2
    assert "cannot lock" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "important data"

    (out / LOCK_NAME).unlink()
    (series,) = scan(slow_slide).series
    uid = new_series_uid(series.uid, RecodeOptions("jxl", EncodeSettings(quality=60)))
    (out / (STAGING_PREFIX + uid)).symlink_to(precious, target_is_directory=True)
    assert main(args) == 1
    assert "is a link or a file" in capsys.readouterr().err
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    assert (precious / "notes.txt").read_text() == "important data"


def test_a_folder_at_the_locks_name_is_a_one_line_error(slow_slide, tmp_path, capsys):
    from wsitranscode.cli import main
    from wsitranscode.layout import LOCK_NAME

    out = tmp_path / "out"
    (out / LOCK_NAME).mkdir(parents=True)
    assert main(["recode", str(slow_slide), "-o", str(out), "--codec", "jxl"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot lock" in line and "Traceback" not in line


def test_ctrl_c_with_worker_processes_records_the_series_interrupted(slow_slide, tmp_path):
    """Ctrl-C in a terminal signals the whole group, the spawned workers too: their
    KeyboardInterrupt comes back through the batches and must end as `interrupted`."""

    out = tmp_path / "out"
    args = (*SLOW_ARGS, "--executor", "processes")
    proc = _start_and_wait_for_staging(slow_slide, out, *args, own_group=True)
    time.sleep(2.0)  # the spawned workers are importing or coding
    os.killpg(proc.pid, signal.SIGINT)
    _assert_interrupted_then_resumed(proc, slow_slide, out, args)


def test_series_of_earlier_runs_stay_in_the_record_until_a_run_replaces_them(
    wsi_factory, slow_slide, tmp_path
):
    """Run 1 finishes b and c. Run 2, with a new slide a that comes first, is interrupted while
    on a: its record must still describe b and c, so run 3 resumes all three (b and c were
    refused as 'not a complete earlier run' when the record named only a)."""
    import shutil

    folder = tmp_path / "in"
    for name, seed in (("b", 61), ("c", 62)):
        src = wsi_factory(f"carry-{name}", transfer_syntax="1.2.840.10008.1.2.1", levels=1,
                          label=False, thumbnail=False, tile_size=128, seed=seed)  # fmt: skip
        shutil.copytree(src, folder / name)
    out = tmp_path / "out"
    first = subprocess.run(recode_command(folder, out, *SLOW_ARGS), env=ENV, capture_output=True,
                           text=True)  # fmt: skip
    assert first.returncode == 0, first.stderr
    done_first = json.loads((out / RUN_RECORD_NAME).read_text())["series"]

    shutil.copytree(slow_slide, folder / "a")
    proc = _start_and_wait_for_staging(folder, out, *SLOW_ARGS)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    rows = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    assert sorted(r["status"] for r in rows) == ["interrupted", "ok", "ok"]
    assert {r["series_instance_uid"] for r in rows if r.get("carried_over")} == {
        r["series_instance_uid"] for r in done_first
    }

    third = subprocess.run(recode_command(folder, out, *SLOW_ARGS), env=ENV, capture_output=True,
                           text=True)  # fmt: skip
    assert third.returncode == 0, third.stderr
    rows = json.loads((out / RUN_RECORD_NAME).read_text())["series"]
    assert sorted(r["status"] for r in rows) == ["done-before", "done-before", "ok"]
    assert not any(r.get("carried_over") for r in rows)
    assert len(_published_dirs(out)) == 3


def test_a_second_ctrl_c_still_waits_for_the_series_to_stop(slow_slide, tmp_path):
    """Pressing Ctrl-C twice must not leave OUT unlocked with series still writing: the run
    ends as after one, and the rerun resumes."""
    out = tmp_path / "out"
    proc = _start_and_wait_for_staging(slow_slide, out, *SLOW_ARGS)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _assert_interrupted_then_resumed(proc, slow_slide, out, SLOW_ARGS)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_worker_processes_end_when_recode_is_killed(slow_slide, tmp_path):
    """SIGKILL runs no cleanup: the spawned workers of --executor processes must still go, not
    wait for tasks forever (seen: two 90 MB workers alive long after their recode)."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux /proc to find the worker processes")
    out = tmp_path / "out"
    proc = _start_and_wait_for_staging(slow_slide, out, *SLOW_ARGS, "--executor", "processes")
    deadline = time.monotonic() + 30
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:  # workers + tracker
        time.sleep(0.1)
    children = _children(proc.pid)
    assert children, "no worker process started"
    proc.kill()
    proc.wait()  # not communicate(): surviving workers would hold its pipes open
    proc.stdout.close()
    proc.stderr.close()
    deadline = time.monotonic() + 15
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [c for c in children if _alive(c)]
    for pid in survivors:  # leave nothing running, whatever the verdict
        os.kill(pid, signal.SIGKILL)
    assert not survivors


def test_json_still_reports_a_run_stopped_by_ctrl_c(slow_slide, tmp_path):
    out = tmp_path / "out"
    proc = _start_and_wait_for_staging(slow_slide, out, *SLOW_ARGS, "--json")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    (series,) = json.loads(stdout)["series"]
    assert series["status"] == "interrupted"
