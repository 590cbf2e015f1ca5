"""`wsitranscode recode`: the CLI skin over wsitranscode.recode."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from wsitranscode.commands import (
    add_executor_arguments,
    codec_extra,
    console_err,
    console_out,
    print_json,
    skipped_summary,
)

DEFAULT_QUALITY = 85  # --q when neither --q nor --bpp is given

QUALITY_HELP = (
    "quality 0-100, higher is better; the same q gives about the fidelity libjpeg reaches at "
    "that quality, whatever the codec (each codec's mapping: docs/usage.md)"
)


def add_parser(sub: Any, name: str, help_text: str) -> None:
    from wsitranscode.codecs.base import codec_names

    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("input", type=Path, help="folder (or file) with DICOM WSI instances")
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="output folder (not inside input)"
    )
    p.add_argument(
        "--codec",
        choices=codec_names(),
        default=None,
        help="target codec (required unless --model names a trained model: then `neural`)",
    )
    p.add_argument(
        "--q",
        type=_quality,
        default=None,
        metavar="Q",
        help=QUALITY_HELP + f" (default {DEFAULT_QUALITY}; not with --bpp)",
    )
    p.add_argument("--lossless", action="store_true", help="lossless mode (jxl, j2k, htj2k, webp)")
    p.add_argument(
        "--effort",
        type=int,
        default=None,
        help="encoder effort: JPEG XL 1-9 (default 5, lossless 7), WebP method 0-6 (default 4)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=0,
        metavar="N",
        help="threads for decode/encode (default: all cores)",
    )
    p.add_argument("--only", choices=["volume"], default=None, help="recode only VOLUME instances")
    p.add_argument(
        "--overwrite", action="store_true", help="replace earlier output instead of resuming"
    )
    p.add_argument(
        "--min-psnr",
        type=float,
        default=None,
        metavar="DB",
        help="verification floor for lossy frames (default 20 dB): a frame below it fails",
    )
    bitrate = p.add_argument_group("target bitrate (instead of --q)")
    bitrate.add_argument(
        "--bpp",
        type=float,
        default=None,
        metavar="BPP",
        help="choose the quality per slide so the tissue frames reach this many bits per pixel",
    )
    bitrate.add_argument(
        "--bpp-per-tile",
        action="store_true",
        help="with --bpp: search each tile's quality (slower, tighter)",
    )
    p.add_argument(
        "--follow-symlinks", action="store_true", help="follow symbolic links inside the input"
    )
    run_on = add_executor_arguments(p, "frame batches")
    run_on.add_argument(
        "--batch-frames",
        type=positive_int,
        default=0,
        metavar="N",
        help="frames per task (default: the executor's)",
    )
    neural = p.add_argument_group("neural codecs")
    neural.add_argument("--weights", type=Path, default=None, help="local weights file")
    neural.add_argument("--model", type=Path, default=None, help="a model made by `train`")
    neural.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    neural.add_argument(
        "--batch-size", type=positive_int, default=None, help="tiles per network batch"
    )
    p.add_argument("--json", action="store_true", help="print the run result as JSON on stdout")


def _quality(text: str) -> int:
    """argparse type of --q (its name would show in argparse's default message)."""
    if not (text.isdigit() and 0 <= int(text) <= 100):
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 100, not {text!r}")
    return int(text)


def positive_int(text: str) -> int:
    """argparse type of counts such as --workers and --batch-frames."""
    if not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    from wsitranscode.recode import open_run

    options = recode_options(args)  # usage errors before any progress is drawn
    _warn_if_quality_ignored(args, options)
    _warn_if_options_ignored(options)
    with open_run(args.input, args.output, options) as job:
        result = execute_with_progress(job, args.json)
    return report_outcome(result, args.json, command="recode")


def execute_with_progress(job: Any, as_json: bool) -> Any:
    """Run an opened recode or export with progress bars. On Ctrl-C, --json still prints the
    result so far (what was done, what a rerun must finish) before the exit with 130."""
    try:
        with RichProgress() as progress:
            return job.execute(progress, on_scanned=progress.scanned)
    except KeyboardInterrupt:
        if as_json:
            print_json(job.result().to_json())
        raise


def recode_options(args: argparse.Namespace) -> Any:
    """RecodeOptions from the command line; UsageError for combinations that make no sense."""
    from wsitranscode.codecs.base import EncodeSettings
    from wsitranscode.errors import UsageError
    from wsitranscode.recode import DEFAULT_MIN_PSNR, RecodeOptions

    if args.codec is None:
        if args.model is None:
            raise UsageError("choose a codec with --codec (or a trained model with --model)")
        args.codec = "neural"
    if args.q is not None and args.bpp is not None:
        raise UsageError("--q and --bpp exclude each other: --bpp chooses the quality itself")
    quality = DEFAULT_QUALITY if args.q is None else args.q
    return RecodeOptions(
        codec=args.codec,
        settings=EncodeSettings(
            quality=quality, lossless=args.lossless, effort=args.effort, extra=codec_extra(args)
        ),
        workers=args.workers,
        executor=args.executor,
        scheduler=args.scheduler,
        batch_frames=args.batch_frames,
        follow_symlinks=args.follow_symlinks,
        target_bpp=args.bpp,
        bpp_per_tile=args.bpp_per_tile,
        overwrite=args.overwrite,
        only=args.only,
        min_psnr=DEFAULT_MIN_PSNR if args.min_psnr is None else args.min_psnr,
    )


_OPTION_FLAGS = {"model": "--model", "weights": "--weights", "device": "--device",
                 "batch_size": "--batch-size"}  # fmt: skip


def _warn_if_options_ignored(options: Any) -> None:
    """--effort, or a neural codec's options, given to a codec that does not read them."""
    from wsitranscode.codecs.base import get_codec

    codec = get_codec(options.codec)
    ignored = [] if codec.uses_effort or options.settings.effort is None else ["--effort"]
    if codec.option_keys is not None:
        ignored += [
            _OPTION_FLAGS.get(key, key)
            for key, _ in options.settings.extra
            if key not in codec.option_keys
        ]
    if ignored:
        console_err().print(
            f"[yellow]warning:[/] {', '.join(ignored)} ignored by {codec.name}", soft_wrap=True
        )


def _warn_if_quality_ignored(args: argparse.Namespace, options: Any) -> None:
    """--q given where the output does not depend on it: say so rather than ignore it quietly."""
    from wsitranscode.codecs.base import get_codec
    from wsitranscode.recode import quality_applies

    if args.q is None:
        return
    codec = get_codec(options.codec)
    if quality_applies(codec, options.settings):
        return
    why = "with --lossless" if args.lossless else f"by {codec.name}: it keeps the source frames"
    console_err().print(f"[yellow]warning:[/] --q {args.q} is ignored {why}", soft_wrap=True)


def report_outcome(result: Any, as_json: bool, command: str) -> int:
    """Notes, warnings and failures on stderr; the table or JSON on stdout; the exit code."""
    for note in result.notes:
        console_err().print(f"note: {note}", soft_wrap=True)
    for warning in result.warnings:
        console_err().print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    if as_json:
        print_json(result.to_json())
    else:
        print_summary(result, command)
    for series in result.failed:
        console_err().print(
            f"[bold red]failed:[/] series {series.series_instance_uid}: {series.error}",
            soft_wrap=True,
        )
    for skipped in result.unreadable_files:
        console_err().print(
            f"[bold red]failed:[/] {skipped['path']}: {skipped['reason']}", soft_wrap=True
        )
    return result.exit_code()


class RichProgress:
    """Overall and per-series progress bars (frames, tiles/s, ETA) on stderr. Several series
    may be in flight at once, each with its own bar; callbacks come from several threads."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console_err(),
            transient=False,
        )
        self.overall: TaskID | None = None
        self.series: dict[str, TaskID] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self.progress.__enter__()
        self.overall = self.progress.add_task("all series", total=None, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def scanned(self, scanned: Any, total_frames: int) -> None:
        self.progress.update(self.overall, total=total_frames)
        if scanned.skipped:
            console_err().print(skipped_summary(scanned.skipped), soft_wrap=True)

    def start_series(self, series_uid: str, total_frames: int) -> None:
        with self.lock:
            self.series[series_uid] = self.progress.add_task(
                f"series …{series_uid[-12:]}", total=total_frames, rate=""
            )

    def advance(self, series_uid: str, frames: int) -> None:
        with self.lock:
            for task_id in (self.overall, self.series.get(series_uid)):
                if task_id is None:
                    continue
                self.progress.advance(task_id, frames)
                speed = self.progress.tasks[task_id].speed
                if speed:
                    self.progress.update(task_id, rate=f"{speed:,.0f} tiles/s")

    def end_series(self, series_uid: str, status: str) -> None:
        with self.lock:
            task_id = self.series.pop(series_uid, None)
            if task_id is not None:
                self.progress.update(task_id, description=f"series …{series_uid[-12:]} {status}")


def print_summary(result: Any, command: str) -> None:
    table = Table(title=f"{command} → {result.output}", show_lines=False)
    for col in (
        "series",
        "patient",
        "status",
        "instances",
        "MB in",
        "MB out",
        "ratio",
        "bpp",
        "PSNR dB",
        "s",
    ):
        table.add_column(
            col, justify="right" if col not in ("series", "patient", "status") else "left"
        )
    for s in result.series:
        summ = s.summary()
        psnr = "exact" if summ["exact"] else _fmt(summ["psnr_mean"], "{:.2f}")
        table.add_row(
            "…" + s.series_instance_uid[-16:],
            s.patient_id,
            _status(s.status),
            str(len(s.instances)),
            _fmt(s.input_bytes / 1e6, "{:.2f}"),
            _fmt(summ["bytes_out"] / 1e6, "{:.2f}"),
            _fmt(summ["ratio"], "{:.1f}×"),
            _fmt(summ["bpp"], "{:.3f}"),
            psnr,
            f"{s.seconds:.1f}",
        )
    console_out().print(table)
    for s in result.series:
        if s.rate_control and "quality" in s.rate_control:
            rc = s.rate_control
            reached = rc.get("tissue_bpp")
            console_out().print(
                f"series …{s.series_instance_uid[-16:]}: q{rc['quality']} chosen for "
                f"{rc['target_bpp']} bpp ({rc['achieved_bpp']:.3f} on the sample"
                + (f", {reached:.3f} over all tissue frames)" if reached else ")")
                + "; the table's bpp counts every frame, glass included, and the headers",
                soft_wrap=True,
            )
    console_out().print(f"output: {result.output}\nrun record: {result.record_path}")


def _status(status: str) -> str:
    colour = {
        "ok": "green",
        "done-before": "cyan",
        "failed": "red",
        "skipped": "yellow",
        "interrupted": "yellow",
    }
    colour = colour.get(status, "white")
    return f"[{colour}]{status}[/]"


def _fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)
