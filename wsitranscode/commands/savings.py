"""`wsitranscode savings --measured REPORT_DIR... (--archive DIR | --collection rms)`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wsitranscode.commands import console_err, console_out, print_json

DEFAULT_PRICE = 23.0  # USD per TB and month, about cloud object storage list prices


def add_parser(sub: Any, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument(
        "--measured",
        type=Path,
        nargs="+",
        required=True,
        metavar="REPORT_DIR",
        help="validate report folders or recode output folders with measured ratios",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--archive", type=Path, help="a folder of DICOM WSI series to project onto")
    target.add_argument(
        "--collection", help="an IDC collection id or alias (rms), from the packaged index"
    )
    p.add_argument(
        "--price-per-tb-month",
        type=_price,
        default=DEFAULT_PRICE,
        metavar="P",
        help=f"storage price per TB and month (default {DEFAULT_PRICE})",
    )
    p.add_argument("--json", action="store_true", help="print the projection as JSON on stdout")


def _price(text: str) -> float:
    """--price-per-tb-month: a finite number, zero or more (argparse refuses others: exit 2)."""
    from wsitranscode.errors import UsageError
    from wsitranscode.quality.savings import check_price

    try:
        return check_price(float(text))
    except (ValueError, UsageError):
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, not {text!r}") from None


def _require_existing(paths: list[Path]) -> None:
    """Paths that do not exist are usage errors (exit 2), found before any work is done."""
    from wsitranscode.errors import UsageError

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"{', '.join(missing)} does not exist")


def run(args: argparse.Namespace) -> int:
    from wsitranscode.quality.savings import (
        archive_from_folder,
        archive_from_idc,
        measured_fractions,
        project,
    )
    from wsitranscode.report import load_reports
    from wsitranscode.report.files import distinct_reports

    _require_existing([*args.measured, *([args.archive] if args.archive else [])])
    loaded = distinct_reports(load_reports(args.measured))
    series_rows = [row for data, _, _ in loaded for row in data["series"]]
    if args.archive is not None:
        name, archive = str(args.archive), archive_from_folder(args.archive)
    else:
        name, archive = archive_from_idc(args.collection)
    measured = measured_fractions(series_rows, {s.name: s.kind for s in archive})
    result = project(name, archive, measured.fractions, args.price_per_tb_month, measured.notes)
    if args.json:
        print_json(result.to_json())
        return 0
    from wsitranscode.idc import human_bytes

    def size(tb: float) -> str:
        return human_bytes(tb * 1e12)

    out = console_out()
    out.print(f"{result.archive}: {result.series} series")
    out.print(
        f"before {size(result.tb_before)}, after {size(result.tb_after)} "
        f"(95% CI {size(result.tb_after_low)}-{size(result.tb_after_high)}), "
        f"saved {size(result.tb_saved)}"
    )
    out.print(
        f"cost per year at {result.price_per_tb_month:g}/TB-month: "
        f"{result.cost_per_year_before:,.0f} -> {result.cost_per_year_after:,.0f} "
        f"(saves {result.saved_per_year:,.0f})"
    )
    for note in result.notes:
        console_err().print(
            f"[yellow]note:[/] {note}", markup=True, highlight=False, soft_wrap=True
        )
    return 0
