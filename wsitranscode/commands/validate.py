"""`wsitranscode validate ORIGINAL RECODED`: compare recoded series with their sources."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wsitranscode.commands import add_executor_arguments, console_err, console_out, print_json


def add_parser(sub: Any, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("original", type=Path, help="folder with the original DICOM WSI series")
    p.add_argument("recoded", type=Path, help="folder with the recoded series (recode's output)")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="report folder (default RECODED-report)"
    )
    p.add_argument(
        "--metrics",
        type=_metric_list,
        default="psnr,ssim,ms-ssim,lpips,feature",
        help="comma-separated: psnr, ssim, ms-ssim, lpips, feature (default: all)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--sample",
        type=int,
        default=100,
        metavar="N",
        help="measure N tiles at random positions on tissue at level 0 (default 100)",
    )
    which.add_argument(
        "--all", dest="all_frames", action="store_true", help="measure every frame of every level"
    )
    p.add_argument("--tile-size", type=int, default=224, help="sampled tile size (default 224)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tile positions (default 0)")
    p.add_argument(
        "--min-psnr",
        type=float,
        default=20.0,
        metavar="DB",
        help="a lossy frame below this PSNR is an error: damaged (default 20 dB)",
    )
    p.add_argument("--lpips-weights", type=Path, default=None, help="torchvision AlexNet weights")
    p.add_argument(
        "--feature-weights",
        type=Path,
        default=None,
        help="Ciga et al. ResNet18 checkpoint (pytorchnative_tenpercent_resnet18.ckpt)",
    )
    p.add_argument("--no-download", action="store_true", help="never download metric weights")
    p.add_argument(
        "--device", default=None, help="torch device (default: cuda if present, else cpu)"
    )
    p.add_argument("--no-dciodvfy", action="store_true", help="skip the dciodvfy check")
    p.add_argument("--workers", type=int, default=0, help="decode workers (default: all cores)")
    add_executor_arguments(p, "frame comparisons")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def _metric_list(text: str) -> tuple[str, ...]:
    from wsitranscode.validate import ALL_METRICS

    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL_METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(ALL_METRICS)
        )
    return names


def run(args: argparse.Namespace) -> int:
    from wsitranscode.report import write_report
    from wsitranscode.validate import ValidateOptions, validate

    metrics = args.metrics if isinstance(args.metrics, tuple) else _metric_list(args.metrics)
    output = args.output or args.recoded.with_name(args.recoded.name + "-report")
    options = ValidateOptions(
        metrics=metrics,
        sample=args.sample,
        all_frames=args.all_frames,
        tile_size=args.tile_size,
        seed=args.seed,
        min_psnr=args.min_psnr,
        lpips_weights=args.lpips_weights,
        feature_weights=args.feature_weights,
        allow_download=not args.no_download,
        device=args.device,
        run_dciodvfy=not args.no_dciodvfy,
        workers=args.workers,
        executor=args.executor,
        scheduler=args.scheduler,
        output_dir=output,
    )
    report = validate(args.original, args.recoded, options)
    data = report.to_json()
    paths = write_report(data, report.tiles, output)
    if args.json:
        print_json({**data, "report_files": {k: str(v) for k, v in paths.items()}})
    else:
        _print_summary(data, paths)
    for line in report.all_errors():
        console_err().print(
            f"[bold red]error:[/] {line}", markup=True, highlight=False, soft_wrap=True
        )
    return 0 if report.ok else 1


SUMMARY_FOOTNOTE = (
    "tile PSNR: mean and worst over the sampled tiles (every frame when none were sampled), "
    "each at the source's bit depth, exact tiles counted as 100 dB; recode's PSNR is that of "
    "the mean squared error over all frames. max err: the largest |original - recoded| sample "
    "over every frame."
)


def _print_summary(data: dict[str, Any], paths: dict[str, Path]) -> None:
    from rich.table import Table

    table = Table(title="validation", caption=SUMMARY_FOOTNOTE, caption_justify="left")
    columns = ("series", "recode", "ratio", "bpp", "savings %", "exact", "tile PSNR mean",
               "tile PSNR worst", "max err", "errors")  # fmt: skip
    for column in columns:
        table.add_column(column)
    for s in data["series"]:
        table.add_row(*_summary_row(s))
    console_out().print(table)
    for note in distinct_notes(data["series"]):
        console_err().print(
            f"[yellow]note:[/] {note}", markup=True, highlight=False, soft_wrap=True
        )
    console_out().print(f"report: {paths['html']}")


def _summary_row(s: dict[str, Any]) -> list[str]:
    psnr = s["metrics"].get("psnr", {})
    exact = s["pixel_exact"] if s["byte_exact"] is None else s["byte_exact"]
    return [
        short_series_name(s),
        s["label"] or "",
        _num(s["ratio"], 2),
        _num(s["bpp"], 3),
        _num(s["savings_percent"], 1),
        "" if exact is None else str(exact),
        _num(psnr.get("mean"), 2),
        _num(psnr.get("worst"), 2),
        "" if s.get("max_abs_error") is None else str(s["max_abs_error"]),
        str(len(s["errors"])),
    ]


def short_series_name(series: dict[str, Any]) -> str:
    """The source series as recode's table names it ("…" and the last 16 UID characters)."""
    uid = series.get("source_series_uid") or series.get("recoded_series_uid") or ""
    return "…" + uid[-16:] if len(uid) > 16 else uid


def distinct_notes(series: list[dict[str, Any]]) -> list[str]:
    """Notes to print once for the whole run: unavailable metrics and 8-bit copies."""
    from wsitranscode.validate import eight_bit_copy_note

    notes: list[str] = []
    for s in series:
        notes += s["unavailable"].values()
        if s.get("eight_bit_copy"):
            notes.append(eight_bit_copy_note(s["eight_bit_copy"], s.get("bits_stored")))
    return list(dict.fromkeys(notes))


def _num(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"
