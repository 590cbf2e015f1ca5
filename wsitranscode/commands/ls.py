"""`wsitranscode ls`: one row per DICOM WSI series found under a folder."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table

from wsitranscode.commands import console_out, print_json, skipped_summary


def add_parser(sub: Any, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("path", type=Path, help="folder (searched recursively) or file")
    p.add_argument("--follow-symlinks", action="store_true", help="follow symbolic links inside")
    p.add_argument("--json", action="store_true", help="print the series as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from wsitranscode.dicom.scan import scan
    from wsitranscode.errors import UsageError

    if not args.path.exists():
        raise UsageError(f"{args.path} does not exist")
    scanned = scan(args.path, follow_symlinks=args.follow_symlinks)
    rows = [series_row(s) for s in scanned.series]
    if args.json:
        print_json(
            {
                "path": str(args.path),
                "series": rows,
                "skipped": [{"path": str(s.path), "reason": s.reason} for s in scanned.skipped],
            }
        )
    else:
        print_table(rows, skipped_summary(scanned.skipped))
    # as for recode: a file that looks like DICOM but cannot be read may be a missing level
    unreadable = any(s.reason.startswith("unreadable") for s in scanned.skipped)
    return 1 if unreadable or any(r["problems"] for r in rows) else 0


def series_row(series: Any) -> dict[str, Any]:
    from wsitranscode.dicom.syntaxes import name_of

    flavors = Counter(i.flavor for i in series.instances)
    volume = sorted(
        (i for i in series.instances if i.flavor == "VOLUME"),
        key=lambda i: -(i.total_columns or 0) * (i.total_rows or 0),
    )
    levels = sorted(
        {(i.total_columns, i.total_rows) for i in volume}, key=lambda wh: -wh[0] * wh[1]
    )
    tiles = sorted({(i.columns, i.rows) for i in volume})
    syntaxes = sorted({i.transfer_syntax_uid for i in series.instances})
    return {
        "patient_id": series.patient_id,
        "study_instance_uid": series.study_uid,
        "series_instance_uid": series.uid,
        "instances": dict(sorted(flavors.items())),
        "levels": [{"columns": w, "rows": h} for w, h in levels],
        "tile_sizes": [{"columns": w, "rows": h} for w, h in tiles],
        "transfer_syntaxes": [{"uid": uid, "name": name_of(uid)} for uid in syntaxes],
        "bytes": series.total_bytes,
        "bits_per_pixel": series.bits_per_pixel(),
        "problems": list(series.problems),
    }


def print_table(rows: list[dict[str, Any]], skipped: str) -> None:
    table = Table(title=f"{len(rows)} whole-slide series")
    for col in (
        "patient",
        "series",
        "instances",
        "levels",
        "tile",
        "transfer syntaxes",
        "MB",
        "bpp",
    ):
        table.add_column(col, justify="right" if col in ("MB", "bpp") else "left", overflow="fold")
    for r in rows:
        instances = ", ".join(f"{n} {flavor.lower()}" for flavor, n in r["instances"].items())
        levels = " ".join(f"{lv['columns']}×{lv['rows']}" for lv in r["levels"])
        tiles = " ".join(f"{t['columns']}×{t['rows']}" for t in r["tile_sizes"])
        syntaxes = ", ".join(ts["name"] for ts in r["transfer_syntaxes"])
        bpp = r["bits_per_pixel"]
        table.add_row(
            str(r["patient_id"] or ""),
            "…" + r["series_instance_uid"][-16:],
            instances,
            levels,
            tiles,
            syntaxes,
            f"{r['bytes'] / 1e6:.2f}",
            "–" if bpp is None else f"{bpp:.2f}",
        )
    console_out().print(table)
    # below the table, one line each: inside a cell they would wrap mid-UID and not copy whole
    for r in rows:
        for problem in r["problems"]:
            series = "…" + r["series_instance_uid"][-16:]
            console_out().print(f"[red]problem[/] series {series}: {problem}", soft_wrap=True)
    if skipped:
        console_out().print(skipped, soft_wrap=True)
