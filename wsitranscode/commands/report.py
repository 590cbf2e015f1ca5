"""`wsitranscode report RUN_OR_REPORT_DIR... -o DIR`: aggregate runs and reports into one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wsitranscode.commands import console_out, print_json


def add_parser(sub: Any, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        metavar="RUN_OR_REPORT_DIR",
        help="validate report folders (report.json) or recode output folders (run record)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the new report")
    p.add_argument("--json", action="store_true", help="print the aggregate as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from wsitranscode.report import load_reports, merge_reports, write_report
    from wsitranscode.report.files import totals_text

    loaded = load_reports(args.inputs)
    args.output.mkdir(parents=True, exist_ok=True)
    data, tiles = merge_reports(loaded, args.output)
    paths = write_report(data, tiles, args.output)
    if args.json:
        print_json({**data, "report_files": {k: str(v) for k, v in paths.items()}})
    else:
        console_out().print(
            f"{len(data['series'])} series from {len(loaded)} run(s): {paths['html']}"
        )
        console_out().print(totals_text(data["totals"]))
    return 0 if data["ok"] else 1
