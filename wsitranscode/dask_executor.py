"""Frame batches on a Dask distributed cluster: `--executor dask [--scheduler ADDRESS]`.

The client side of a recode stays where it is (scan, plan, the single streaming writer per
instance, the run record); only `process_batch` runs on the workers, so the workers must see the
input files at the same paths (shared storage: NFS, Lustre, a bucket mounted with the same path
everywhere). They never see the output: encoded frames come back to the client, which writes them.

Where the cluster comes from, first match wins:
- `scheduler` given: a `tcp://host:port` address, or the path of a scheduler file (JSON, as
  written by `dask scheduler --scheduler-file`, dask-jobqueue or dask-mpi);
- Dask's own configuration `scheduler-address` (`DASK_SCHEDULER_ADDRESS`);
- otherwise a `LocalCluster` of `workers` processes with one thread each on 127.0.0.1, closed
  with the executor.

Losing a worker is survived by Dask itself: the scheduler reruns the lost worker's tasks elsewhere
(up to `distributed.scheduler.allowed-failures` times per task). Errors raised by a task (a frame
that does not decode) are not retried: they come back from `.result()` as they were raised.

`cancel_pending()` (what a recode stopped by Ctrl-C calls) cancels every task submitted and not
yet finished, queued or running, in one message to the scheduler: the client waits for none of
them (a worker thread already inside a cancelled task finishes it, and its result is dropped).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsitranscode.errors import UsageError, WsiTranscodeError

DEFAULT_BATCH_FRAMES = 32  # each task costs a scheduler round trip: make it worth one
WAIT_FOR_WORKERS_S = 60


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as err:
        raise UsageError(
            "--executor dask needs Dask distributed: pip install 'wsitranscode[dask]'"
        ) from err
    return distributed


class DaskExecutor:
    """The executor surface of `wsitranscode.execute` on a Dask distributed client."""

    def __init__(
        self,
        scheduler: str | None = None,
        workers: int = 0,
        batch_frames: int = DEFAULT_BATCH_FRAMES,
    ):
        distributed = _import_distributed()
        self.batch_frames = batch_frames
        self._cluster: Any = None
        # the futures submitted and not yet finished, for cancel_pending(); each leaves the set
        # when it finishes (a done callback), so a long run holds no finished task's result
        self._lock = threading.Lock()
        self._unfinished: set[Any] = set()
        self._cancelled = False
        self.client = self._connect(distributed, scheduler, workers)
        try:
            self.workers = self._total_threads()
        except BaseException:
            self.close()
            raise

    def _connect(self, distributed: Any, scheduler: str | None, workers: int) -> Any:
        import dask

        address = scheduler or dask.config.get("scheduler-address", None)
        if address:
            return self._client_for(distributed, str(address))
        self._cluster = distributed.LocalCluster(
            n_workers=max(workers, 1),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        return distributed.Client(self._cluster, set_as_default=False)

    @staticmethod
    def _client_for(distributed: Any, address: str) -> Any:
        is_file = address.endswith(".json") or Path(address).is_file()
        kwargs = {"scheduler_file": address} if is_file else {"address": address}
        try:
            # the connect timeout is Dask's `distributed.comm.timeouts.connect` (30 s by default)
            return distributed.Client(**kwargs, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise UsageError(
                f"cannot reach the Dask scheduler at {address} ({type(err).__name__}: {err})"
            ) from err

    def _total_threads(self) -> int:
        try:
            self.client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        except TimeoutError as err:
            raise UsageError(
                f"the Dask cluster at {self.client.scheduler.address} has no workers after "
                f"{WAIT_FOR_WORKERS_S} s"
            ) from err
        return max(sum(self.client.nthreads().values()), 1)

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> BatchFuture:
        with self._lock:
            if self._cancelled:
                raise RuntimeError("cannot submit a batch after cancel_pending()")
            # pure=False: every batch is its own task, never deduplicated with another run's
            future = self.client.submit(fn, arg, pure=False)
            self._unfinished.add(future)
        # called at once if already finished; otherwise on Dask's callback thread
        future.add_done_callback(self._finished)
        return BatchFuture(future, arg)

    def _finished(self, future: Any) -> None:
        with self._lock:
            self._unfinished.discard(future)

    def cancel_pending(self) -> None:
        """Cancel every task submitted and not yet finished; later submits raise RuntimeError.
        Their futures' `.result()` then raises (WsiTranscodeError), without waiting."""
        with self._lock:
            self._cancelled = True
            unfinished = [f for f in self._unfinished if not f.done()]
            self._unfinished.clear()
        if unfinished:
            self.client.cancel(unfinished)

    def worker_pids(self) -> dict[str, int]:
        """Process id of each worker (tests kill one to check that its tasks are rerun)."""
        import os

        return self.client.run(os.getpid)

    def close(self) -> None:
        client, cluster = getattr(self, "client", None), self._cluster
        self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


class BatchFuture:
    """A Dask future whose cluster-side failures come back as one-line errors naming the batch.

    A task that kills every worker it runs on (`KilledWorker`: a decoder crash or the memory
    limit, `allowed-failures` + 1 times) and a task cancelled (the scheduler went away, or
    `cancel_pending()`) would otherwise reach the user as a traceback.
    """

    def __init__(self, future: Any, arg: Any):
        self.future = future
        self.arg = arg

    def result(self) -> Any:
        from concurrent.futures import CancelledError

        from distributed import KilledWorker

        try:
            return self.future.result()
        except KilledWorker as err:
            raise WsiTranscodeError(
                f"{self._frames()} killed the Dask workers that ran them ({err}); a decoder "
                "crash or the worker memory limit",
                path=getattr(self.arg, "path", None),
            ) from err
        except CancelledError as err:
            raise WsiTranscodeError(
                f"{self._frames()}: the Dask task was cancelled (run stopped, or scheduler lost); "
                "rerun to resume",
                path=getattr(self.arg, "path", None),
            ) from err

    def cancel(self) -> None:
        self.future.cancel()

    def _frames(self) -> str:
        start, stop = getattr(self.arg, "start", None), getattr(self.arg, "stop", None)
        return f"frames {start}-{stop - 1}" if start is not None and stop else "a batch"
