"""Recode every frame of every DICOM WSI series in a folder into new DICOM instances.

One instance at a time: frames are read, decoded, encoded and verified in batches by an
executor (threads by default; processes or Dask, see execute.py) with a bounded window of batches
in flight, and streamed in order to the writer. A series is staged in a hidden folder and renamed
into place only when every instance in it is complete and verified, so a killed run leaves
nothing that looks complete; the run record (`wsitranscode-run.json`) makes a rerun skip what is
already done. One run at a time holds OUT (a lock file); Ctrl-C stops after the batches already
running and leaves the unfinished series staged for the rerun.

`recode()` does it all; `open_run()` + `RecodeRun.execute()` split it where a caller wants every
usage error (paths, options, a busy or incompatible OUT) before it draws any progress.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from wsitranscode import __version__
from wsitranscode.codecs.base import Codec, EncodeSettings, TargetEncoding, get_codec
from wsitranscode.errors import (
    InvalidInputError,
    UsageError,
    WsiTranscodeError,
)
from wsitranscode.execute import default_workers, make_executor, run_ordered
from wsitranscode.hashing import sha256_file
from wsitranscode.layout import LOCK_NAME, RUN_RECORD_NAME, STAGING_PREFIX
from wsitranscode.pipeline import (
    FrameBatch,
    FrameOutcome,
    open_reader,
    process_batch,
    psnr_from_mse,
)

# 2: quality names the one used (none for lossless, --bpp, jxl-recompress, which changes their
# output UIDs), source kinds per series, rows of earlier runs carried over
RUN_RECORD_VERSION = 2
DEFAULT_MIN_PSNR = 20.0  # below this a lossy frame is treated as corrupt (wrong colour space, say)


class ProgressSink(Protocol):
    """What `recode` reports while it works; the CLI draws it with rich."""

    def start_series(self, series_uid: str, total_frames: int) -> None: ...
    def advance(self, series_uid: str, frames: int) -> None: ...
    def end_series(self, series_uid: str, status: str) -> None: ...


class NullProgress:
    def start_series(self, series_uid: str, total_frames: int) -> None:
        pass

    def advance(self, series_uid: str, frames: int) -> None:
        pass

    def end_series(self, series_uid: str, status: str) -> None:
        pass


@dataclass
class RecodeOptions:
    codec: str
    settings: EncodeSettings = field(default_factory=EncodeSettings)
    workers: int = 0  # 0: all cores
    overwrite: bool = False
    only: str | None = None  # "volume": recode only VOLUME instances
    min_psnr: float = DEFAULT_MIN_PSNR
    timestamp: datetime | None = None  # fixed creation time for reproducible output
    executor: str = "local"  # local (threads) | processes | dask
    scheduler: str | None = None  # Dask scheduler address
    batch_frames: int = 0  # frames per task; 0: the executor's default
    follow_symlinks: bool = False
    series_in_flight: int = 0  # series recoded at once; 0: from the executor's workers
    export: bool = False  # only series in private syntaxes; keep references to both predecessors
    target_bpp: float | None = None  # choose the quality per slide (or per tile) for this bpp
    bpp_per_tile: bool = False

    def resolved_workers(self) -> int:
        return self.workers if self.workers > 0 else default_workers()

    def fixed_quality(self) -> int | None:
        """The quality every frame is encoded at; None when there is none to name: chosen per
        slide or tile for --bpp, or without effect (lossless, byte-exact recompression)."""
        if self.target_bpp is not None:
            return None
        return quality_used(get_codec(self.codec), self.settings, self)

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a rerun to resume instead of refusing."""
        codec = get_codec(self.codec)
        return {
            "codec": self.codec,
            "quality": self.fixed_quality(),
            "lossless": self.settings.lossless,
            "effort": self.settings.effort if codec.uses_effort else None,
            "extra": output_options(codec, self.settings),
            "only": self.only,
            "export": self.export,
            "target_bpp": self.target_bpp,
            "bpp_per_tile": self.bpp_per_tile,
        }


# where and in what batches the work runs does not change the output
_PLACEMENT_OPTIONS = ("device", "batch_size")
_FILE_OPTIONS = ("model", "weights")  # named by the file's content, not by its path


def output_options(codec: Codec, settings: EncodeSettings) -> dict[str, str]:
    """The codec options that decide the output bytes: those the codec reads, without where the
    work runs, and a weights file as `sha256:<its content's hash>`, so that another model at the
    same path gives other UIDs (and cannot resume a series begun with the first)."""
    wanted = codec.option_keys
    options = {}
    for key, value in settings.extra:
        if key in _PLACEMENT_OPTIONS or (wanted is not None and key not in wanted):
            continue
        options[key] = file_identity(value) if key in _FILE_OPTIONS else value
    return options


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_identity(path: str) -> str:
    """`sha256:<hex>` of a file's bytes (cached by path, size and mtime), or the path as given
    when it cannot be read (the codec then reports the missing file itself)."""
    try:
        stat = os.stat(path)
    except OSError:
        return path
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = "sha256:" + sha256_file(path)
    return _FILE_HASHES[key]


def quality_applies(codec: Codec, settings: EncodeSettings) -> bool:
    """Whether `settings.quality` changes what the codec writes: not for lossless settings, nor
    for a byte-exact recompression of the source frames (jxl-recompress)."""
    target = codec.target(settings)
    return target.lossy and not target.compresses_source_bytes


def quality_used(codec: Codec, settings: EncodeSettings, options: RecodeOptions) -> int | None:
    """The quality frames encoded with `settings` get (the --q, or the one chosen for a --bpp
    target); None where quality has no effect or is chosen tile by tile."""
    if options.bpp_per_tile or not quality_applies(codec, settings):
        return None
    return settings.quality


def run_label(fingerprint: dict[str, Any], row: dict[str, Any]) -> str | None:
    """How a recoded series is named in tables: `jxl q85`, `jxl lossless`, `jxl-recompress`,
    `jxl q52 for 0.5 bpp`, `jxl q40-61 per tile for 0.5 bpp`. `row` is the run record's series
    or instance row (its `quality` is the one used; records before it existed have only the
    fingerprint's)."""
    codec = fingerprint.get("codec")
    if not codec:
        return None
    if fingerprint.get("lossless"):
        return f"{codec} lossless"
    bpp = fingerprint.get("target_bpp")
    for_bpp = f" for {bpp:g} bpp" if bpp is not None else ""
    per_tile = [row.get("tile_quality")] + [i.get("tile_quality") for i in row.get("instances", [])]
    per_tile = [t for t in per_tile if t]
    if per_tile:
        low, high = min(t["min"] for t in per_tile), max(t["max"] for t in per_tile)
        return f"{codec} q{low}-{high} per tile{for_bpp}"
    quality = row.get("quality", fingerprint.get("quality"))
    if quality is None:
        return codec if bpp is None else f"{codec}{for_bpp}"
    return f"{codec} q{quality}{for_bpp}"


# What each fingerprint entry is called on the command line, for "which option differs".
_OPTION_NAMES = {
    "codec": "--codec",
    "quality": "--q",
    "lossless": "--lossless",
    "effort": "--effort",
    "extra": "--weights/--model",
    "only": "--only",
    "export": "export (the command)",
    "target_bpp": "--bpp",
    "bpp_per_tile": "--bpp-per-tile",
}


def option_differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Each option in which two fingerprints differ, as "--q 85 there, 60 now"."""
    keys = [*wanted, *(k for k in recorded if k not in wanted)]
    return [
        f"{_OPTION_NAMES.get(k, k)} {_shown(recorded.get(k))} there, {_shown(wanted.get(k))} now"
        for k in keys
        if recorded.get(k) != wanted.get(k)
    ]


def _shown(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def check_options(options: RecodeOptions) -> None:
    """Refuse options that cannot work before anything in OUT is touched."""
    for name, value in (
        ("workers", options.workers),
        ("batch_frames", options.batch_frames),
        ("series_in_flight", options.series_in_flight),
    ):
        if value < 0:
            raise UsageError(f"{name} must be 0 (automatic) or a positive number, not {value}")
    if options.bpp_per_tile and options.target_bpp is None:
        raise UsageError("--bpp-per-tile needs --bpp")
    bpp = options.target_bpp
    if bpp is not None and (not (bpp > 0 and math.isfinite(bpp)) or options.settings.lossless):
        raise UsageError("--bpp needs a positive target and a lossy codec (not --lossless)")


@dataclass
class InstanceResult:
    source_path: str
    source_sop_instance_uid: str
    flavor: str
    frames: int
    status: str = "pending"  # ok | done-before | failed
    output_path: str | None = None
    quality: int | None = None  # what quality_used() says: the one its frames were encoded at
    sop_instance_uid: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    pixel_bytes_in: int = 0
    pixel_bytes_out: int = 0
    uncompressed_bytes: int = 0
    pixels: int = 0  # rows * columns * frames
    compression_ratio: float | None = None
    mse_mean: float | None = None  # lossy targets only; pooled over frames
    peak: float = 255.0  # the largest pixel value (2**BitsStored - 1), for PSNR
    psnr_mean: float | None = None  # from mse_mean; None when every frame is exact
    psnr_min: float | None = None
    worst_frame: int | None = None
    exact: bool | None = None
    seconds: float = 0.0
    decode_seconds: float = 0.0
    encode_seconds: float = 0.0
    verify_seconds: float = 0.0
    repairs: list[str] = field(default_factory=list)
    tile_quality: dict[str, int] | None = None  # --bpp-per-tile: the qualities chosen
    # Samples over 8 bits only: the largest |source - output| and the brightest source sample
    max_abs_error: int | None = None
    source_max: int | None = None
    error: str | None = None


@dataclass
class SeriesResult:
    series_instance_uid: str
    patient_id: str
    study_instance_uid: str
    status: str = "pending"  # ok | failed | done-before | skipped | interrupted
    note: str | None = None
    quality: int | None = None  # what every frame was encoded at (--q, or chosen for --bpp)
    input_bytes: int = 0  # the source files to recode, known before any work (failed series too)
    # what kind of source this was, for `savings` projections onto archives of the same kind
    source_transfer_syntaxes: list[str] = field(default_factory=list)
    source_photometric: str = ""
    new_series_instance_uid: str | None = None
    output_dir: str | None = None
    instances: list[InstanceResult] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    rate_control: dict[str, Any] | None = None  # --bpp: the quality chosen and the bpp reached

    @property
    def bytes_in(self) -> int:
        return sum(i.bytes_in for i in self.instances)

    @property
    def bytes_out(self) -> int:
        return sum(i.bytes_out for i in self.instances)

    @property
    def pixels(self) -> int:
        return sum(i.pixels for i in self.instances)

    def summary(self) -> dict[str, Any]:
        frames = sum(i.frames for i in self.instances)
        lossy = [i for i in self.instances if i.mse_mean is not None]
        lossy_frames = sum(i.frames for i in lossy)
        # normalised by each instance's peak, so 8- and 16-bit instances pool correctly
        nmse = sum(i.mse_mean / i.peak**2 * i.frames for i in lossy) / max(lossy_frames, 1)
        return {
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "ratio": (self.bytes_in / self.bytes_out) if self.bytes_out else None,
            "frames": frames,
            # whole output files (headers included) in bits per pixel of every frame
            "bpp": (self.bytes_out * 8 / self.pixels) if self.pixels else None,
            "psnr_mean": _finite(psnr_from_mse(nmse, 1.0)) if lossy else None,
            "psnr_min": min(
                (i.psnr_min for i in self.instances if i.psnr_min is not None), default=None
            ),
            "exact": all(i.exact for i in self.instances) if self.instances else None,
        }


@dataclass
class RunResult:
    input: str
    output: str
    options: dict[str, Any]
    series: list[SeriesResult]
    skipped_files: list[dict[str, str]]
    started: str
    finished: str
    record_path: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the run cleaned up in OUT
    # rows of the earlier record for series this run has not (yet) recoded: their output is
    # still in OUT, so the record keeps describing it (resume, --overwrite)
    earlier_series: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[SeriesResult]:
        return [s for s in self.series if s.status == "failed"]

    @property
    def unreadable_files(self) -> list[dict[str, str]]:
        """Files that look like DICOM but could not be read: an error, unlike non-DICOM files."""
        return [f for f in self.skipped_files if f["reason"].startswith("unreadable")]

    def exit_code(self) -> int:
        return 1 if self.failed or self.unreadable_files else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RUN_RECORD_VERSION,
            "tool": f"wsitranscode {__version__}",
            "input": self.input,
            "output": self.output,
            "options": self.options,
            "started": self.started,
            "finished": self.finished,
            "warnings": self.warnings,
            "notes": self.notes,
            "skipped_files": self.skipped_files,
            "series": [
                {
                    **_series_fields(s),
                    "summary": s.summary(),
                    "instances": [asdict(i) for i in s.instances],
                }
                for s in self.series
            ]
            + [{**row, "carried_over": True} for row in self.earlier_series],
        }


def _series_fields(series: SeriesResult) -> dict[str, Any]:
    data = asdict(series)
    data.pop("instances")
    return data


# ---------------------------------------------------------------------------------------------
# Output planning


def check_paths(input_path: Path, output: Path) -> None:
    if not input_path.exists():
        raise UsageError(f"input {input_path} does not exist")
    inp = input_path.resolve()
    out = output.resolve()
    if out == inp or inp in out.parents:
        raise UsageError(
            f"output {output} is inside the input {input_path}; choose a folder outside it "
            "(inputs are never modified)"
        )
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} exists and is not a folder")


def derived_uid(*parts: str) -> str:
    """A deterministic 2.25 UID from what identifies the derived object (source + options)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big"))


def new_series_uid(source_series_uid: str, options: RecodeOptions) -> str:
    """The derived series' UID, which also names its folder (and staging folder) in OUT."""
    return derived_uid("series", source_series_uid, _fingerprint_text(options))


def _fingerprint_text(options: RecodeOptions) -> str:
    return json.dumps(options.fingerprint(), sort_keys=True)


def selected_instances(series: Any, only: str | None) -> list[Any]:
    """The instances of a series that a run with `--only` recodes."""
    return [i for i in series.instances if only is None or i.flavor == "VOLUME"]


_DERIVED_UID = re.compile(r"2\.25\.\d{1,39}")


def our_folder(output: Path, name: str) -> Path | None:
    """OUT/name when it can only be a series or staging folder that recode made (named by a
    derived 2.25 UID, a real folder, not a link); None for anything else. Only such folders
    are ever removed."""
    if not _DERIVED_UID.fullmatch(name.removeprefix(STAGING_PREFIX)):
        return None
    path = output / name
    return path if path.is_dir() and not path.is_symlink() else None


@contextmanager
def exclusive_output(output: Path) -> Iterator[None]:
    """Hold OUT/.wsitranscode.lock for the run: a second run into the same OUT (which would
    publish, resume and clean up the same folders) is refused with a UsageError."""
    path = output / LOCK_NAME
    fd = _take_lock(path, output)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        # removed while still held (a run that opened it meanwhile finds it gone and retries),
        # and only if the file at that path is still the one we hold
        if _is_file_at(fd, path):
            path.unlink(missing_ok=True)
        os.close(fd)


def _take_lock(path: Path, output: Path) -> int:
    while True:
        try:
            # O_NOFOLLOW: a link planted at the lock's name must not truncate its target
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise UsageError(
                f"cannot lock {path} ({err.strerror or err}): {output} must be a writable folder "
                f"and {LOCK_NAME} in it a regular file, or absent"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise UsageError(
                f"{output} is in use by another wsitranscode run"
                + (f" (pid {holder})" if holder.isdigit() else "")
                + "; wait for it to end or choose another output folder"
            ) from None
        except OSError as err:  # ENOLCK: a file system without locks
            os.close(fd)
            raise UsageError(
                f"cannot lock {path} ({err.strerror or err}); choose an output folder on a "
                "file system with file locks"
            ) from None
        if _is_file_at(fd, path):
            return fd
        os.close(fd)  # its holder removed it between our open and our lock: take the new one


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        at_path = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


def run_timestamp(options: RecodeOptions) -> datetime:
    if options.timestamp is not None:
        return options.timestamp
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return datetime.fromtimestamp(int(epoch), UTC)
    return datetime.now(UTC).replace(microsecond=0)


# ---------------------------------------------------------------------------------------------
# Run record (resume)


class RunRecord:
    """The JSON record in OUT: written after every instance so a killed run can resume."""

    def __init__(self, path: Path, *, replacing: bool = False):
        self.path = path
        self.data: dict[str, Any] = {}
        self.unreadable: str | None = None  # why, when `replacing` let an unreadable one pass
        if path.exists():
            try:
                self.data = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                if not replacing:
                    raise UsageError(
                        f"{path} is not a readable run record ({err}); move it away or use "
                        "--overwrite"
                    ) from err
                self.unreadable = str(err)

    def fingerprint(self) -> dict[str, Any] | None:
        return self.data.get("options", {}).get("fingerprint")

    def series_folders(self) -> list[str]:
        """The folder names in OUT of the series this record describes."""
        return [
            series["output_dir"]
            for series in self.data.get("series", [])
            if isinstance(series.get("output_dir"), str)
        ]

    def created(self) -> datetime | None:
        value = self.data.get("options", {}).get("timestamp")
        return datetime.fromisoformat(value) if value else None

    def rate_control(self) -> dict[str, dict[str, Any]]:
        """The --bpp quality choices already made, by source series UID."""
        return {
            series["series_instance_uid"]: series["rate_control"]
            for series in self.data.get("series", [])
            if series.get("rate_control") and "quality" in series["rate_control"]
        }

    def done_instances(self) -> dict[str, dict[str, Any]]:
        done: dict[str, dict[str, Any]] = {}
        for series in self.data.get("series", []):
            for inst in series.get("instances", []):
                if inst.get("status") in ("ok", "done-before") and inst.get("output_path"):
                    done[inst["source_sop_instance_uid"] + "|" + inst["source_path"]] = inst
        return done

    def write(self, payload: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(payload, indent=1, default=str, allow_nan=False))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self.data = payload


# ---------------------------------------------------------------------------------------------
# Frame processing


def ordered_results(
    executor: Any, batches: Iterator[FrameBatch], window: int
) -> Iterator[FrameOutcome]:
    """Frame outcomes in order, with at most `window` batches in flight (bounded memory)."""
    for outcomes in run_ordered(executor, process_batch, batches, window):
        yield from outcomes


class RecodeInterrupted(Exception):
    """Raised in a series' thread when the run is stopping (Ctrl-C): the series stops at its next
    frame, publishes nothing and keeps what it finished staged for the rerun."""


def frame_batches(template: FrameBatch, count: int, size: int) -> Iterator[FrameBatch]:
    for start in range(0, count, size):
        yield replace(template, start=start, stop=min(start + size, count))


# ---------------------------------------------------------------------------------------------
# One instance


@dataclass
class InstancePlan:
    instance: Any  # scan.Instance
    output_name: str
    uids: Any  # derive.DerivedUIDs


def _target_for(codec: Codec, settings: EncodeSettings, info: Any) -> TargetEncoding:
    target = codec.target(settings)
    if target.compresses_source_bytes:  # the source codestream, and so its colour, is kept
        return replace(target, photometric=info.photometric)
    if info.samples_per_pixel == 1:
        return replace(target, photometric="MONOCHROME2")
    return target


def _describe_rate_control(
    target: TargetEncoding, codec: Codec, options: RecodeOptions
) -> TargetEncoding:
    """Say in the header's descriptions that the quality was chosen for a bitrate target."""
    if options.target_bpp is None:
        return target
    if options.bpp_per_tile:
        description = f"{codec.name}, quality chosen per tile for {options.target_bpp} bpp"
    else:
        description = f"{target.description}, quality chosen for {options.target_bpp} bpp"
    return replace(target, description=description)


def _check_codec_accepts(codec: Codec, info: Any, path: Path) -> None:
    reason = codec.unsupported_pixels(info.samples_per_pixel, info.bits_stored)
    if reason:
        raise UsageError(reason, path=path)
    if not codec.accepts_source(info.transfer_syntax_uid):
        from wsitranscode.dicom.syntaxes import name_of

        raise UsageError(
            f"codec {codec.name} cannot recode frames in {name_of(info.transfer_syntax_uid)}",
            path=path,
        )


def recode_instance(
    plan: InstancePlan,
    staging_dir: Path,
    codec: Codec,
    options: RecodeOptions,
    executor: Any,
    progress: ProgressSink,
    created: datetime,
    settings: EncodeSettings,
    stopping: threading.Event | None = None,
) -> InstanceResult:
    from wsitranscode.dicom.decode import PixelInfo
    from wsitranscode.dicom.derive import derive_header
    from wsitranscode.dicom.writer import EncapsulatedWriter

    inst = plan.instance
    result = InstanceResult(
        source_path=str(inst.path),
        source_sop_instance_uid=inst.sop_instance_uid,
        flavor=inst.flavor,
        frames=inst.number_of_frames,
        bytes_in=inst.file_size,
        quality=quality_used(codec, settings, options),
    )
    started = time.perf_counter()
    out_path = staging_dir / plan.output_name
    # the workers' cached reader: the header is parsed once per file, not once more here
    reader = open_reader(str(inst.path))
    info = PixelInfo.from_dataset(reader.header)
    target = _describe_rate_control(_target_for(codec, settings, info), codec, options)
    _check_codec_accepts(codec, info, inst.path)
    header, repairs = derive_header(
        reader.header,
        target,
        plan.uids,
        source_path=inst.path,
        now=created,
        software_version=__version__,
        keep_ancestors=options.export,
    )
    result.repairs = repairs
    target_info = PixelInfo.from_dataset(header)
    peak = float(2**info.bits_stored - 1)
    template = FrameBatch(
        path=str(inst.path),
        start=0,
        stop=0,
        codec=codec.name,
        settings=settings,
        target=target,
        source_info=info,
        target_info=target_info,
        min_psnr=options.min_psnr,
        peak=peak,
        target_bpp=options.target_bpp if options.bpp_per_tile else None,
    )
    batch_size = options.batch_frames or executor.batch_frames
    batches = frame_batches(template, reader.number_of_frames, batch_size)
    window = 2 * executor.workers
    sq_error = 0.0
    worst = (-1.0, None)
    all_exact = True
    qualities: list[int] = []
    with (
        EncapsulatedWriter(out_path, header, reader.number_of_frames) as writer,
        # closed on the way out, so the batches still queued are cancelled, not awaited
        closing(ordered_results(executor, batches, window)) as outcomes,
    ):
        for outcome in outcomes:
            if stopping is not None and stopping.is_set():
                raise RecodeInterrupted
            writer.write_frame(outcome.data)
            result.pixel_bytes_in += outcome.source_bytes
            result.pixel_bytes_out += len(outcome.data)
            result.decode_seconds += outcome.decode_s
            result.encode_seconds += outcome.encode_s
            result.verify_seconds += outcome.verify_s
            check = outcome.check
            sq_error += check.mse
            all_exact = all_exact and check.exact
            if check.mse > worst[0]:
                worst = (check.mse, outcome.index)
            if outcome.quality is not None:
                qualities.append(outcome.quality)
            if check.max_abs_error is not None:
                result.max_abs_error = max(result.max_abs_error or 0, check.max_abs_error)
                result.source_max = max(result.source_max or 0, check.source_max or 0)
            progress.advance(inst.series_uid, 1)
        frame_bytes = info.rows * info.columns * info.samples_per_pixel * info.bits_allocated // 8
        result.uncompressed_bytes = frame_bytes * reader.number_of_frames
        result.pixels = info.rows * info.columns * reader.number_of_frames
        ratio = result.uncompressed_bytes / max(result.pixel_bytes_out, 1)
        writer.commit(ratio)
    result.compression_ratio = round(ratio, 4)
    if qualities:
        result.tile_quality = {
            "min": min(qualities),
            "median": statistics.median_low(qualities),
            "max": max(qualities),
        }
    result.exact = all_exact
    if target.lossy and not target.compresses_source_bytes:
        result.mse_mean = sq_error / max(inst.number_of_frames, 1)
        result.peak = peak
        result.psnr_mean = _finite(psnr_from_mse(result.mse_mean, peak))
        result.psnr_min = _finite(psnr_from_mse(worst[0], peak))
        result.worst_frame = worst[1]
    result.sop_instance_uid = plan.uids.sop_instance_uid
    result.bytes_out = out_path.stat().st_size
    result.output_path = plan.output_name
    result.seconds = time.perf_counter() - started
    result.status = "ok"
    return result


LOW_RANGE_FRACTION = 16  # "low range": the brightest sample under 1/16 of 2^BitsStored - 1


def low_range_loss_warning(series_uid: str, instances: list[InstanceResult]) -> str | None:
    """A warning when lossy coding moved high-bit-depth samples by a large part of the range
    the data actually uses (a 16-bit channel holding 0..24): q, and PSNR, are relative to the
    full 2^BitsStored range, where such a loss still looks like 80+ dB."""
    measured = [
        i
        for i in instances
        if i.max_abs_error
        and i.source_max is not None
        # data that uses most of its range is what q and PSNR are made for
        and i.source_max * LOW_RANGE_FRACTION < i.peak
    ]
    if not measured:
        return None
    worst = max(measured, key=lambda i: i.max_abs_error / max(i.source_max, 1))
    used = max(worst.source_max, 1)
    if worst.max_abs_error * 10 <= used:  # within a tenth of the brightest sample: plausible
        return None
    bits = int(worst.peak).bit_length()
    return (
        f"series {series_uid}: samples reach only {worst.source_max} of {int(worst.peak)} "
        f"({bits}-bit), but lossy coding changed them by up to {worst.max_abs_error} "
        f"({worst.source_path}); q and PSNR are relative to the full {bits}-bit range. Use "
        "--lossless, or a higher --q, for data that uses so little of it"
    )


def _finite(value: float) -> float | None:
    """JSON has no infinity: an exact result is reported as None with `exact` true."""
    return None if math.isinf(value) else round(value, 3)


# ---------------------------------------------------------------------------------------------
# One series, and the whole run


def _instance_order(instance: Any) -> tuple[int, int, int, str]:
    flavors = {"VOLUME": 0, "LABEL": 1, "OVERVIEW": 2, "THUMBNAIL": 3}
    return (
        flavors.get(instance.flavor, 4),
        -(instance.total_columns or 0) * (instance.total_rows or 0),
        instance.concatenation_frame_offset or 0,
        str(instance.path),
    )


def plan_series(series: Any, options: RecodeOptions) -> tuple[str, list[InstancePlan]]:
    from wsitranscode.dicom.derive import DerivedUIDs

    fp = _fingerprint_text(options)
    series_uid = new_series_uid(series.uid, options)
    pyramid_uid = derived_uid("pyramid", series.uid, fp)
    instances = sorted(selected_instances(series, options.only), key=_instance_order)
    plans = []
    for n, inst in enumerate(instances, start=1):
        concat = inst.concatenation_uid or None
        uids = DerivedUIDs(
            series_instance_uid=series_uid,
            sop_instance_uid=derived_uid("sop", inst.sop_instance_uid, fp),
            pyramid_uid=pyramid_uid,
            # shared by all parts of one concatenation, so derived from its ConcatenationUID
            concatenation_uid=derived_uid("concat", concat, fp) if concat else None,
            concatenation_source_uid=derived_uid("concat-source", concat, fp) if concat else None,
        )
        plans.append(InstancePlan(inst, f"{n:03d}-{file_flavor(inst.flavor)}.dcm", uids))
    return series_uid, plans


def file_flavor(flavor: str) -> str:
    """ImageType value 3 as a file-name part: the value comes from the input, so only [a-z0-9_]
    of it is used (a flavor of "../../x" must not become a path)."""
    cleaned = re.sub(r"[^a-z0-9]+", "_", flavor.lower()).strip("_")[:16]
    return cleaned or "image"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SeriesRecoder:
    """Recodes one series into a staging folder and publishes it whole, or not at all."""

    def __init__(self, run: RecodeRun, series: Any):
        self.run = run
        self.series = series
        self.result = SeriesResult(
            series_instance_uid=series.uid,
            patient_id=str(series.patient_id or ""),
            study_instance_uid=str(series.study_uid or ""),
            input_bytes=sum(i.file_size for i in selected_instances(series, run.options.only)),
            source_transfer_syntaxes=series.transfer_syntaxes(),
            source_photometric="+".join(
                sorted({i.photometric for i in series.instances if i.photometric})
            ),
        )
        self.staging: Path | None = None
        self.settings = run.options.settings

    def __call__(self) -> SeriesResult:
        started = time.perf_counter()
        try:
            self._recode()
        except KeyboardInterrupt:
            # Ctrl-C reaches the worker processes of `--executor processes` too; their
            # KeyboardInterrupt comes back through a batch's result, in this thread
            self.run.interrupt()
            self._interrupted()
        except Exception as err:
            # once the run is stopping, whatever broke (a cancelled batch, a pool shut down)
            # broke because of that: the series is interrupted, not failed
            if self.run.stopping.is_set():
                self._interrupted()
            elif isinstance(err, WsiTranscodeError):
                self._fail(err.one_line())
            elif isinstance(err, OSError):
                self._fail(f"{err.filename or self.run.output}: {err.strerror or err}")
            else:
                raise
        finally:
            self.result.seconds = round(time.perf_counter() - started, 3)
        return self.result

    def _interrupted(self) -> None:
        """Nothing is published; the instances finished so far stay staged and recorded, so a
        rerun with the same options reuses them."""
        self.result.status = "interrupted"
        self.result.note = "interrupted: rerun with the same options to finish it"
        self.run.progress.end_series(self.series.uid, "interrupted")

    def _fail(self, message: str) -> None:
        self.result.status = "failed"
        self.result.error = message
        if self.staging is not None and self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)

    def _recode(self) -> None:
        run = self.run
        if self.series.problems:
            raise InvalidInputError("; ".join(self.series.problems))
        if run.options.export and not self._has_private_syntax():
            self.result.status = "skipped"
            self.result.note = "already in standard transfer syntaxes: nothing to export"
            return
        new_uid, plans = plan_series(self.series, run.options)
        self.result.new_series_instance_uid = new_uid
        final_dir = run.output / new_uid
        self.result.output_dir = new_uid
        if final_dir.exists():
            if self._already_done(plans, final_dir):
                return
            if not run.options.overwrite:
                raise UsageError(
                    f"output {final_dir} already exists and is not a complete earlier run of the "
                    "same recode; use --overwrite to replace it"
                )
            shutil.rmtree(final_dir)
        self.settings = self._series_settings()
        self.result.quality = quality_used(run.codec, self.settings, run.options)
        staging = run.output / (STAGING_PREFIX + new_uid)
        if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
            # never write into, or clean up, whatever a link there points at
            raise InvalidInputError(
                f"{staging} is a link or a file, not a staging folder wsitranscode made; move it "
                "away and rerun"
            )
        self.staging = staging
        self.staging.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(self.staging, {plan.output_name for plan in plans})
        run.progress.start_series(self.series.uid, sum(p.instance.number_of_frames for p in plans))
        for plan in plans:
            run.raise_if_stopping()
            self.result.instances.append(self._instance(plan))
            run.checkpoint()
            failed = self.result.instances[-1]
            if failed.status == "failed":
                raise WsiTranscodeError(failed.error or "instance failed")
        if run.options.target_bpp is not None and self.result.rate_control is not None:
            # a new dict, not a key added: a checkpoint on another thread may be copying it
            tissue_bpp = self._tissue_bpp(plans)
            self.result.rate_control = {**self.result.rate_control, "tissue_bpp": tissue_bpp}
        os.replace(self.staging, final_dir)
        _fsync_dir(run.output)
        self.staging = None
        warning = low_range_loss_warning(self.series.uid, self.result.instances)
        if warning:
            run.warnings.append(warning)
        self.result.status = "ok"
        run.progress.end_series(self.series.uid, "ok")

    def _series_settings(self) -> EncodeSettings:
        """The settings for this series: with --bpp, the quality chosen on a tissue sample
        (reused from the run record on resume, so resumed frames match the earlier ones)."""
        options = self.run.options
        if options.target_bpp is None:
            return options.settings
        if options.bpp_per_tile:
            self.result.rate_control = {"target_bpp": options.target_bpp, "per_tile": True}
            return options.settings
        recorded = self.run.recorded_rate_control.get(self.series.uid)
        if recorded is None:
            from wsitranscode.ratecontrol import (
                DEFAULT_SAMPLE_FRAMES,
                choose_quality,
                sample_tissue_tiles_from_series,
            )

            tiles = sample_tissue_tiles_from_series(self.series, DEFAULT_SAMPLE_FRAMES, seed=0)
            choice = choose_quality(
                self.run.codec,
                tiles,
                options.target_bpp,
                options.settings,
                workers=options.resolved_workers(),
                before_each=self.run.raise_if_stopping,
            )
            recorded = {**choice.to_json(), "sample_frames": len(tiles)}
        self.result.rate_control = dict(recorded)
        return replace(options.settings, quality=int(recorded["quality"]))

    def _tissue_bpp(self, plans: list[InstancePlan]) -> float | None:
        """The bpp reached over the tissue frames of the highest-magnification level."""
        from wsitranscode.dicom.frames import FrameReader
        from wsitranscode.ratecontrol import tissue_frames

        assert self.staging is not None
        output_of = {str(p.instance.path): self.staging / p.output_name for p in plans}
        bits = pixels = 0
        by_file: dict[str, list[int]] = {}
        for ref in tissue_frames(self.series):
            by_file.setdefault(str(ref.instance_path), []).append(ref.frame)
        for source, indices in by_file.items():
            with FrameReader(output_of[source]) as reader:
                for index in indices:
                    bits += 8 * len(reader.read_frame(index))
                    pixels += reader.header.Rows * reader.header.Columns
        return round(bits / pixels, 6) if pixels else None

    def _has_private_syntax(self) -> bool:
        from wsitranscode.dicom.syntaxes import is_private

        return any(is_private(i.transfer_syntax_uid) for i in self.series.instances)

    def _already_done(self, plans: list[InstancePlan], final_dir: Path) -> bool:
        done = self.run.done
        rows = []
        for plan in plans:
            row = done.get(plan.instance.sop_instance_uid + "|" + str(plan.instance.path))
            out = final_dir / plan.output_name
            if row is None or not out.exists() or out.stat().st_size != row.get("bytes_out"):
                return False
            rows.append(row)
        self.result.instances = [_instance_from_row(r) for r in rows]
        qualities = {i.quality for i in self.result.instances}
        self.result.quality = qualities.pop() if len(qualities) == 1 else None
        self.result.rate_control = self.run.recorded_rate_control.get(self.series.uid)
        self.result.status = "done-before"
        self.run.progress.advance(self.series.uid, sum(p.instance.number_of_frames for p in plans))
        return True

    def _instance(self, plan: InstancePlan) -> InstanceResult:
        assert self.staging is not None
        row = self.run.done.get(plan.instance.sop_instance_uid + "|" + str(plan.instance.path))
        out = self.staging / plan.output_name
        reusable = row and not self.run.options.overwrite and out.exists()
        if reusable and out.stat().st_size == row.get("bytes_out"):
            self.run.progress.advance(self.series.uid, plan.instance.number_of_frames)
            return _instance_from_row(row)
        try:
            return recode_instance(
                plan,
                self.staging,
                self.run.codec,
                self.run.options,
                self.run.executor,
                self.run.progress,
                self.run.created,
                self.settings,
                self.run.stopping,
            )
        except WsiTranscodeError as err:
            self.run.raise_if_stopping()  # a batch cancelled by the stop, not a bad frame
            if err.path is None:
                err = type(err)(err.message, path=plan.instance.path, frame=err.frame)
            return _failed_instance(plan, err.one_line())
        except OSError as err:
            self.run.raise_if_stopping()
            return _failed_instance(
                plan, f"{err.filename or plan.instance.path}: {err.strerror or err}"
            )


def _remove_leftovers(staging: Path, planned: set[str]) -> None:
    """A killed run leaves its temporary files in the staging folder: never publish them."""
    for entry in staging.iterdir():
        if entry.name in planned:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _instance_from_row(row: dict[str, Any]) -> InstanceResult:
    known = {f for f in InstanceResult.__dataclass_fields__}
    result = InstanceResult(**{k: v for k, v in row.items() if k in known})
    result.status = "done-before"
    return result


def _failed_instance(plan: InstancePlan, message: str) -> InstanceResult:
    inst = plan.instance
    return InstanceResult(
        source_path=str(inst.path),
        source_sop_instance_uid=inst.sop_instance_uid,
        flavor=inst.flavor,
        frames=inst.number_of_frames,
        bytes_in=inst.file_size,
        status="failed",
        error=message,
    )


class RecodeRun:
    """One run into OUT, made by `open_run` (checked, OUT locked, its run record read) and done by
    `execute`. Holds what its series share: options, codec, executor, record, progress."""

    def __init__(self, input_path: Path, output: Path, options: RecodeOptions):
        self.input = input_path
        self.output = output
        self.options = options
        self.progress: ProgressSink = NullProgress()
        self.codec = get_codec(options.codec)
        self.record = RunRecord(output / RUN_RECORD_NAME, replacing=options.overwrite)
        self.done: dict[str, dict[str, Any]] = {}
        self.recorded_rate_control: dict[str, dict[str, Any]] = {}
        self.series_results: list[SeriesResult] = []
        self.skipped: list[dict[str, str]] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.started = datetime.now(UTC).replace(microsecond=0).isoformat()
        self.created = run_timestamp(options)
        self.executor: Any = None
        self.stopping = threading.Event()  # set by interrupt(); series threads watch it
        self._sigint_before_stop: Any = None  # the SIGINT handler interrupt() replaced
        self._record_lock = threading.Lock()  # series may be recoded by several threads

    def prepare(self) -> None:
        available, why = self.codec.available()
        if not available:
            raise UsageError(f"codec {self.codec.name} is not available here: {why}")
        target = self.codec.target(self.options.settings)
        if target.private:
            self.warnings.append(
                f"{self.codec.name} has no DICOM transfer syntax: the output uses the private "
                f"transfer syntax {target.transfer_syntax_uid}, which validators, viewers and PACS "
                "reject; use `wsitranscode export` to get back to a standard one"
            )
        if self.options.overwrite:
            self._replace_earlier_run()
        elif self.record.data:
            self._check_same_options()
            self.done = self.record.done_instances()
            self.recorded_rate_control = self.record.rate_control()
            self.created = self.record.created() or self.created

    def _check_same_options(self) -> None:
        differences = option_differences(
            self.record.fingerprint() or {}, self.options.fingerprint()
        )
        if not differences:
            return
        if self.record.data.get("version", 1) < 2:
            raise UsageError(
                f"{self.output} holds a run recorded by an earlier wsitranscode (record version "
                f"{self.record.data.get('version', 1)}; {'; '.join(differences)}): lossless, --bpp "
                "and jxl-recompress runs now record no --q, and their output UIDs changed with "
                "that, so it cannot be resumed; add --overwrite to redo it, or choose another "
                "output folder"
            )
        raise UsageError(
            f"{self.output} holds a run with other options ({'; '.join(differences)}); rerun "
            "with its options to resume it, choose another output folder, or add --overwrite "
            "to replace its output"
        )

    def _replace_earlier_run(self) -> None:
        """--overwrite: remove the series folders the earlier run record names (and their
        staging), then the record, so that OUT holds only what this run records. Folders
        first: a run killed in between leaves a record naming folders that are gone, never
        folders that no record names."""
        if self.record.unreadable is not None:
            self.warnings.append(
                f"the earlier run record {self.record.path} was unreadable "
                f"({self.record.unreadable}): the series folders it named were left in place"
            )
        removed = []
        for name in self.record.series_folders():
            for candidate in (name, STAGING_PREFIX + name):
                folder = our_folder(self.output, candidate)
                if folder is not None:
                    shutil.rmtree(folder)
                    removed.append(candidate)
        if removed:
            self.notes.append(f"--overwrite: removed the earlier run's {', '.join(removed)}")
        self.record.path.unlink(missing_ok=True)
        self.record.data = {}

    def remove_stale_staging(self, all_series: list[Any]) -> None:
        """Remove the staging folders this run will not continue: those of an earlier run that
        was killed or interrupted with other options or inputs (safe: OUT is locked)."""
        planned = {STAGING_PREFIX + new_series_uid(s.uid, self.options) for s in all_series}
        for entry in sorted(self.output.iterdir()):
            if not entry.name.startswith(STAGING_PREFIX) or entry.name in planned:
                continue
            if our_folder(self.output, entry.name) is not None:
                shutil.rmtree(entry)
                self.notes.append(
                    f"removed {entry}: staging of an earlier run that did not finish, with other "
                    "options or inputs than this one"
                )
        for temporary in self.output.glob(f".{RUN_RECORD_NAME}.tmp-*"):  # a killed checkpoint
            if temporary.is_file() and not temporary.is_symlink():
                temporary.unlink()

    def execute(
        self,
        progress: ProgressSink | None = None,
        on_scanned: Callable[[Any, int], None] | None = None,
    ) -> RunResult:
        """Scan the input and recode every series. Ctrl-C (KeyboardInterrupt) stops every
        series after the batches already running, records them `interrupted` and re-raises."""
        from wsitranscode.dicom.scan import scan

        self.progress = progress or NullProgress()
        scanned = scan(self.input, follow_symlinks=self.options.follow_symlinks)
        self.skipped = [{"path": str(s.path), "reason": s.reason} for s in scanned.skipped]
        if not scanned.series:
            self.warnings.append(f"no VL Whole Slide Microscopy series found in {self.input}")
        self.remove_stale_staging(scanned.series)
        if on_scanned is not None:
            selected = (i for s in scanned.series for i in selected_instances(s, self.options.only))
            on_scanned(scanned, sum(i.number_of_frames for i in selected))
        options = self.options
        self.executor = make_executor(options.executor, options.workers, options.scheduler)
        finished = False
        try:
            _recode_all_series(self, scanned.series)
            finished = True
        finally:
            self.executor.close()
            if finished or self.series_results:
                self.checkpoint()  # interrupted too: what is done, what a rerun must finish
            if self._sigint_before_stop is not None:
                signal.signal(signal.SIGINT, self._sigint_before_stop)
        return self.result()

    def interrupt(self) -> None:
        """Stop every series at its next frame: batches still queued are cancelled, so only the
        ones already running are waited for."""
        if threading.current_thread() is threading.main_thread() and not self.stopping.is_set():
            # a second Ctrl-C must not cut the stop short: the series threads are still
            # finishing their frames and the record is still to be written (restored after)
            self._sigint_before_stop = signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.stopping.set()
        if self.executor is not None:  # every executor has cancel_pending (execute.Executor)
            self.executor.cancel_pending()

    def raise_if_stopping(self) -> None:
        if self.stopping.is_set():
            raise RecodeInterrupted

    def options_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.options.fingerprint(),
            "workers": self.options.resolved_workers(),
            "min_psnr": self.options.min_psnr,
            "timestamp": self.created.isoformat(),
        }

    def result(self) -> RunResult:
        return RunResult(
            input=str(self.input),
            output=str(self.output),
            options=self.options_json(),
            series=self.series_results,
            skipped_files=self.skipped,
            started=self.started,
            finished=datetime.now(UTC).replace(microsecond=0).isoformat(),
            record_path=str(self.record.path),
            warnings=self.warnings,
            notes=self.notes,
            earlier_series=self._earlier_series(),
        )

    def _earlier_series(self) -> list[dict[str, Any]]:
        reached = {s.series_instance_uid for s in self.series_results}
        return [
            row
            for row in self.record.data.get("series", [])
            if isinstance(row, dict) and row.get("series_instance_uid") not in reached
        ]

    def checkpoint(self) -> None:
        try:
            with self._record_lock:
                self.record.write(self.result().to_json())
        except OSError as err:
            message = f"run record {self.record.path} could not be written: {err.strerror or err}"
            if message not in self.warnings:
                self.warnings.append(message)


MAX_SERIES_IN_FLIGHT = 8


def series_in_flight(options: RecodeOptions, workers: int) -> int:
    """How many series are recoded at once. Instances are recoded one after another and the
    window of batches drains at each instance's end, so a small slide (one or two batches) alone
    would leave most workers idle: several series at once keep them busy (docs/cluster.md)."""
    if options.series_in_flight > 0:
        return options.series_in_flight
    return max(1, min(MAX_SERIES_IN_FLIGHT, workers // 2))


def _recode_all_series(run: RecodeRun, all_series: list[Any]) -> None:
    """Recode the series on a few client threads; results are listed in scan order."""
    in_flight = series_in_flight(run.options, run.executor.workers)
    pending = iter(all_series)
    running: dict[Future, SeriesRecoder] = {}
    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="series") as pool:
        try:
            while True:
                while len(running) < in_flight and (series := next(pending, None)) is not None:
                    recoder = SeriesRecoder(run, series)
                    run.series_results.append(recoder.result)
                    running[pool.submit(recoder)] = recoder
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    recoder = running.pop(future)
                    future.result()  # a bug (not a data problem) stops the run here
                    if recoder.result.status == "failed":
                        run.progress.end_series(recoder.series.uid, "failed")
                    run.checkpoint()
        except BaseException:
            # Ctrl-C lands here (or a bug): leaving the pool waits for the series' threads, so
            # stop them first, or each would go on to its last frame
            run.interrupt()
            raise


@contextmanager
def open_run(input_path: Path, output: Path, options: RecodeOptions) -> Iterator[RecodeRun]:
    """Check the options and paths, lock OUT and read (or, with overwrite, replace) its run
    record: every usage error is raised here, before any work. OUT stays locked inside."""
    # absolute, so the run record's source paths still lead to the files from anywhere
    input_path, output = Path(input_path).absolute(), Path(output).absolute()
    check_options(options)
    check_paths(input_path, output)
    output.mkdir(parents=True, exist_ok=True)
    with exclusive_output(output):
        run = RecodeRun(input_path, output, options)
        run.prepare()
        yield run


def recode(
    input_path: Path,
    output: Path,
    options: RecodeOptions,
    progress: ProgressSink | None = None,
    on_scanned: Callable[[Any, int], None] | None = None,
) -> RunResult:
    """Recode every WSI series under `input_path` into `output`. See the module docstring."""
    with open_run(input_path, output, options) as run:
        return run.execute(progress, on_scanned)
