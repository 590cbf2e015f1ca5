"""A run killed midway (SIGKILL) leaves nothing that looks complete, and a rerun finishes the job
with output byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
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
