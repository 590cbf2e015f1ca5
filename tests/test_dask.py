"""Recode on a real Dask distributed cluster (worker processes on 127.0.0.1): the output is byte
for byte the local run's, a worker killed mid-run is survived, task errors come back named."""

from __future__ import annotations

import json
import os
import shutil
import signal
from datetime import UTC, datetime

import pytest

distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed")

from tests.dicom_checks import published_bytes, wipe_frame_body  # noqa: E402
from wsitranscode.cli import main  # noqa: E402
from wsitranscode.codecs.base import EncodeSettings  # noqa: E402
from wsitranscode.errors import UsageError  # noqa: E402
from wsitranscode.recode import RUN_RECORD_NAME, RecodeOptions, recode  # noqa: E402

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT = "1.2.840.10008.1.2.1"
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def slide(wsi_factory):
    # 128-pixel tiles: 48 + 12 frames, a label and a thumbnail; enough tasks to spread
    return wsi_factory(
        "dask", transfer_syntax=JPEG_BASELINE, levels=2, tile_size=128, label=True, thumbnail=True
    )


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as local_cluster:
        yield local_cluster


@pytest.fixture(scope="module")
def local_output(slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    result = recode(slide, out, _options("local"))
    assert result.exit_code() == 0
    return published_bytes(out)


def _options(executor: str, scheduler: str | None = None, **kwargs) -> RecodeOptions:
    return RecodeOptions(
        codec="jxl",
        settings=EncodeSettings(quality=85, effort=kwargs.pop("effort", 3)),
        workers=2,
        executor=executor,
        scheduler=scheduler,
        timestamp=CREATED,
        **kwargs,
    )


def test_cli_dask_with_its_own_local_cluster_equals_local_run(
    slide, local_output, tmp_path, monkeypatch
):
    # the CLI path: no scheduler given, so DaskExecutor starts (and closes) a LocalCluster
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(CREATED.timestamp())))
    out = tmp_path / "out"
    argv = ["recode", str(slide), "-o", str(out), "--codec", "jxl", "--effort", "3", "--q", "85"]
    code = main([*argv, "--executor", "dask", "--workers", "2", "--batch-frames", "5"])
    assert code == 0
    assert published_bytes(out) == local_output
    assert len(local_output) == 4


@pytest.mark.parametrize("batch_frames", [1, 7])
def test_scheduler_address_any_batch_size_equals_local_run(
    slide, local_output, cluster, tmp_path, batch_frames
):
    out = tmp_path / "out"
    options = _options("dask", cluster.scheduler_address, batch_frames=batch_frames)
    result = recode(slide, out, options)
    assert result.exit_code() == 0
    assert published_bytes(out) == local_output


class KillOneWorkerAfter:
    """A progress sink that SIGKILLs one Dask worker process once `frames` frames are written:
    tasks are then in flight on it (the window is 2 x workers batches)."""

    def __init__(self, client, frames: int):
        self.client = client
        self.frames = frames
        self.written = 0
        self.killed_pid: int | None = None
        self.tasks_on_killed = 0

    def start_series(self, series_uid: str, total_frames: int) -> None:
        pass

    def end_series(self, series_uid: str, status: str) -> None:
        pass

    def advance(self, series_uid: str, frames: int) -> None:
        self.written += frames
        if self.killed_pid is None and self.written >= self.frames:
            pids = self.client.run(os.getpid)
            # the worker holding the most tasks: it is running one of ours now
            processing = self.client.processing()
            busiest = max(pids, key=lambda address: len(processing.get(address, ())))
            self.killed_pid = pids[busiest]
            self.tasks_on_killed = len(processing.get(busiest, ()))
            os.kill(self.killed_pid, signal.SIGKILL)


def test_worker_killed_mid_run_is_survived(slide, local_output, cluster, tmp_path):
    out = tmp_path / "out"
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        # effort 7 and one frame per task: many slow tasks, so the kill lands mid-run
        killer = KillOneWorkerAfter(client, frames=6)
        options = _options("dask", cluster.scheduler_address, batch_frames=1, effort=7)
        local = recode(slide, tmp_path / "local-e7", _options("local", effort=7))
        result = recode(slide, out, options, progress=killer)
        assert killer.killed_pid is not None and killer.tasks_on_killed > 0
        assert killer.written == 62  # every frame written once, none lost or repeated
        client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
        assert killer.killed_pid not in client.run(os.getpid).values()
    assert result.exit_code() == 0, [s.error for s in result.series]
    assert local.exit_code() == 0
    assert published_bytes(out) == published_bytes(tmp_path / "local-e7")
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    statuses = {i["status"] for s in record["series"] for i in s["instances"]}
    assert statuses == {"ok"}


def test_frame_error_on_a_worker_comes_back_named(slide, cluster, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(slide, folder)
    victim = sorted(folder.rglob("level0.dcm"))[0]
    wipe_frame_body(victim, 5)
    result = recode(folder, tmp_path / "out", _options("dask", cluster.scheduler_address))
    assert result.exit_code() == 1
    error = result.series[0].error
    assert error and "\n" not in error and str(victim) in error and "frame 5" in error


def test_unreachable_scheduler_is_one_line(slide, tmp_path):
    import dask

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(UsageError, match="cannot reach the Dask scheduler at tcp://"),
    ):
        recode(slide, tmp_path / "out", _options("dask", "tcp://127.0.0.1:9"))


def test_task_that_kills_every_worker_it_runs_on_is_one_line():
    import dask

    from wsitranscode.dask_executor import DaskExecutor
    from wsitranscode.errors import WsiTranscodeError

    # the scheduler lives in this process: it reads allowed-failures when the cluster starts
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        executor = DaskExecutor(None, workers=1)
    try:
        future = executor.submit(os._exit, 3)  # the worker process dies running it
        with pytest.raises(WsiTranscodeError, match="killed the Dask workers") as caught:
            future.result()
        assert "\n" not in str(caught.value)
    finally:
        executor.close()


class SeriesOverlap:
    """Records how many series were being recoded at the same time."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.active = 0
        self.most = 0

    def start_series(self, series_uid: str, total_frames: int) -> None:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)

    def end_series(self, series_uid: str, status: str) -> None:
        with self.lock:
            self.active -= 1

    def advance(self, series_uid: str, frames: int) -> None:
        pass


@pytest.fixture(scope="module")
def small_slides(wsi_factory, tmp_path_factory):
    """Six one-level slides of four frames: each is one Dask task at the default batch size."""
    from wsitranscode.synth import synthetic_tissue

    folder = tmp_path_factory.mktemp("small-slides") / "in"
    for seed in range(6):
        src = wsi_factory(
            f"small-{seed}",
            image=synthetic_tissue(256, 256, seed=seed),
            transfer_syntax=EXPLICIT,
            levels=1,
            tile_size=128,
            label=False,
            thumbnail=False,
            seed=seed + 20,
        )
        shutil.copytree(src, folder / f"s{seed}")
    return folder


def test_many_small_slides_run_side_by_side_with_the_same_bytes(small_slides, cluster, tmp_path):
    one_at_a_time = recode(small_slides, tmp_path / "local", _options("local", series_in_flight=1))
    overlap = SeriesOverlap()
    options = _options("dask", cluster.scheduler_address, series_in_flight=3)
    together = recode(small_slides, tmp_path / "dask", options, progress=overlap)
    assert one_at_a_time.exit_code() == 0 and together.exit_code() == 0
    assert overlap.most >= 2
    assert published_bytes(tmp_path / "dask") == published_bytes(tmp_path / "local")
    assert len(published_bytes(tmp_path / "dask")) == 6
    # the run record lists the series in scan order whatever order they finished in
    uids = [s.series_instance_uid for s in together.series]
    assert uids == [s.series_instance_uid for s in one_at_a_time.series]


def test_validate_on_dask_equals_the_local_validation(slide, cluster, tmp_path):
    from wsitranscode.validate import ValidateOptions, validate

    recoded = tmp_path / "recoded"
    assert not recode(slide, recoded, _options("local")).failed

    def run(executor: str, scheduler: str | None = None) -> list:
        options = ValidateOptions(
            metrics=("psnr", "ssim"), sample=4, run_dciodvfy=False, executor=executor,
            scheduler=scheduler, output_dir=tmp_path / executor,
        )  # fmt: skip
        report = validate(slide, recoded, options)
        return [
            (s.frames_compared, s.errors, s.metrics, s.pixel_exact, s.heatmap)
            for s in report.series
        ]

    local = run("local")
    assert local and local[0][0] > 0 and not local[0][1]
    assert run("dask", cluster.scheduler_address) == local


def test_bench_points_coded_on_dask_equal_the_local_ones(cluster, tmp_path):
    from wsitranscode.bench import BenchOptions, run_bench
    from wsitranscode.synth import build_wsi, synthetic_tissue

    folder = tmp_path / "slide"
    build_wsi(synthetic_tissue(512, 512, seed=3), folder, levels=1, label=False, seed=41)

    def run(executor: str, scheduler: str | None = None) -> list:
        options = BenchOptions(
            codecs=("jpeg", "webp"), qualities=(50, 90), tiles=3, tile_size=128,
            metrics=("psnr",), timing="single", executor=executor, scheduler=scheduler,
        )  # fmt: skip
        result = run_bench([folder], options)
        assert not result.notes or all("BD-rate" not in n for n in result.notes)
        return [(p["codec"], p["quality"], p["bpp"], p["metrics"]) for p in result.points]

    local = run("local")
    assert len(local) == 4
    assert run("dask", cluster.scheduler_address) == local


def test_cancel_pending_cancels_queued_and_running_tasks_without_waiting():
    import time

    from wsitranscode.dask_executor import DaskExecutor
    from wsitranscode.errors import WsiTranscodeError

    def wait_until(condition, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    executor = DaskExecutor(None, workers=1)  # one worker thread: all but one task stay queued
    try:
        # finished tasks leave the executor's bookkeeping: a long run holds no finished futures
        assert [executor.submit(abs, -i).result() for i in range(20)] == list(range(20))
        wait_until(lambda: not executor._unfinished)

        futures = [executor.submit(time.sleep, 30) for _ in range(12)]
        wait_until(lambda: any(executor.client.processing().values()))  # the first one runs
        started = time.monotonic()
        executor.cancel_pending()
        for future in futures:
            with pytest.raises(WsiTranscodeError, match="cancelled") as caught:
                future.result()
            assert "\n" not in str(caught.value)
        assert time.monotonic() - started < 10  # none of the 30 s tasks was waited for
        assert all(f.future.cancelled() for f in futures)
        assert not executor._unfinished
        with pytest.raises(RuntimeError, match="cancel_pending"):
            executor.submit(abs, -1)
        # the scheduler forgets them: nothing is left to run once the worker is free
        wait_until(lambda: not executor.client.run_on_scheduler(_scheduler_task_count))
    finally:
        started = time.monotonic()
        executor.close()  # the worker is still inside a cancelled sleep: close does not wait
    assert time.monotonic() - started < 20
    assert executor.client.status == "closed"


def _scheduler_task_count(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)
