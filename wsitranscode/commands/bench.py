"""`wsitranscode bench INPUT... -o DIR --codecs ...`: rate-distortion and speed of codecs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wsitranscode.commands import (
    add_executor_arguments,
    codec_extra,
    console_err,
    console_out,
    print_json,
)

METRICS = ("psnr", "ssim", "ms-ssim", "lpips", "feature")


def add_parser(sub: Any, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="DICOM WSI series folders, DICOM files, image files (PNG, JPEG, TIFF, SVS) or folders",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the results")
    p.add_argument(
        "--codecs",
        default="jpeg,jxl,webp,j2k,htj2k",
        help="comma-separated codec names (default jpeg,jxl,webp,j2k,htj2k); any registered "
        "codec, neural ones included",
    )
    p.add_argument(
        "--q",
        dest="qualities",
        default=None,
        metavar="LIST|A:B:STEP",
        help="qualities: 30,50,80 or 10:90:10 (default 10,20,...,80,85,90,95)",
    )
    p.add_argument("--tiles", type=int, default=100, help="tiles sampled on tissue (default 100)")
    p.add_argument("--tile-size", type=int, default=224, help="tile side in pixels (default 224)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tile positions (default 0)")
    p.add_argument(
        "--precompress",
        default=None,
        metavar="CODEC:Q",
        help="compress the tiles first (jpeg:80: the paper's JPEG80 track) and measure "
        "recompression against the original tiles",
    )
    p.add_argument(
        "--metrics",
        default=",".join(METRICS),
        help=f"comma-separated: {', '.join(METRICS)} (default: all)",
    )
    p.add_argument(
        "--workers", type=int, default=0, help="threads of the all-cores timing (default: all)"
    )
    add_executor_arguments(p, "codec points are coded and timed (the metrics run here)")
    p.add_argument(
        "--timing",
        choices=("both", "single", "parallel"),
        default="both",
        help="single-thread, all-cores or both timings (default both)",
    )
    p.add_argument(
        "--bd-method",
        choices=("pchip", "cubic"),
        default="pchip",
        help="Bjøntegaard interpolation: piecewise cubic (default) or the cubic polynomial fit",
    )
    p.add_argument("--effort", type=int, default=None, help="encoder effort (jxl 1-9, webp 0-6)")
    p.add_argument("--lpips-weights", type=Path, default=None, help="torchvision AlexNet weights")
    p.add_argument(
        "--feature-weights", type=Path, default=None, help="Ciga et al. ResNet18 checkpoint"
    )
    p.add_argument("--no-download", action="store_true", help="never download metric weights")
    p.add_argument(
        "--device", default=None, help="torch device for learned metrics and neural codecs"
    )
    neural = p.add_argument_group("neural codecs")
    neural.add_argument("--weights", type=Path, default=None, help="local weights file (cai*)")
    neural.add_argument("--model", type=Path, default=None, help="a model made by `train`")
    neural.add_argument("--batch-size", type=int, default=None, help="tiles per network batch")
    p.add_argument("--json", action="store_true", help="print results.json on stdout")


def options_from_args(args: argparse.Namespace) -> Any:
    from wsitranscode.bench import DEFAULT_QUALITIES, BenchOptions, parse_qualities
    from wsitranscode.errors import UsageError

    metrics = tuple(m.strip().lower() for m in args.metrics.split(",") if m.strip())
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise UsageError(
            f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}"
        )
    return BenchOptions(
        codecs=tuple(c.strip() for c in args.codecs.split(",") if c.strip()),
        qualities=parse_qualities(args.qualities) if args.qualities else DEFAULT_QUALITIES,
        tiles=args.tiles,
        tile_size=args.tile_size,
        seed=args.seed,
        precompress=args.precompress,
        metrics=metrics,
        workers=args.workers,
        executor=args.executor,
        scheduler=args.scheduler,
        timing=args.timing,
        bd_method=args.bd_method,
        effort=args.effort,
        codec_extra=codec_extra(args),
        lpips_weights=args.lpips_weights,
        feature_weights=args.feature_weights,
        allow_download=not args.no_download,
        device=args.device,
    )


def run(args: argparse.Namespace) -> int:
    from wsitranscode.bench import run_bench, write_outputs

    options = options_from_args(args)
    with _progress(disable=args.json) as report:
        result = run_bench(args.inputs, options, report)
    paths = write_outputs(result, args.output)
    if args.json:
        print_json(result.to_json() | {"files": {k: str(v) for k, v in paths.items()}})
        return 0
    _print_summary(result)
    for line in [*result.notes, *result.unavailable.values()]:
        console_err().print(f"[yellow]note:[/] {line}", markup=True, highlight=False)
    console_out().print(f"results: {paths['csv']}  page: {paths['html']}")
    return 0


class _progress:
    """A rich progress bar on stderr, fed by `run_bench`'s (what, done, total) callback."""

    def __init__(self, disable: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console_err(),
            disable=disable,
            transient=True,
        )
        self.task: Any = None

    def __enter__(self) -> Any:
        self.bar.start()
        return self.update

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, what: str, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.bar.add_task(what, total=total)
        self.bar.update(self.task, description=what, completed=done, total=total)


METRIC_COLUMNS = {  # requested metric -> (column title, decimals)
    "psnr": ("PSNR", 2),
    "ssim": ("SSIM", 4),
    "ms-ssim": ("MS-SSIM", 4),
    "lpips": ("LPIPS", 4),
    "feature": ("feature (avgpool)", 4),
}


def _print_summary(result: Any) -> None:
    from rich.table import Table

    from wsitranscode.bench import summary_names

    requested = [m for m in result.options["metrics"] if m in METRIC_COLUMNS]
    table = Table(title=f"bench, {result.track} track, {len(result.tiles)} tiles")
    titles = [METRIC_COLUMNS[m][0] for m in requested]
    for column in ("codec", "q", "bpp", *titles, "enc ms", "dec ms", "enc Mpx/s"):
        table.add_column(column, justify="left" if column == "codec" else "right")
    for p in result.points:
        metrics, timing = p["metrics"], p.get("timing", {})
        values = [
            _num(metrics.get(name, {}).get("mean"), METRIC_COLUMNS[m][1])
            for m, name in zip(requested, summary_names(requested), strict=True)
        ]
        table.add_row(
            p["codec"],
            str(p["quality"]),
            f"{p['bpp']:.3f}",
            *values,
            _num(timing.get("encode_ms_1t", timing.get("encode_ms_all")), 2),
            _num(timing.get("decode_ms_1t", timing.get("decode_ms_all")), 2),
            _num(timing.get("encode_mpxs_all", timing.get("encode_mpxs_1t")), 2),
        )
    console_out().print(table)
    if result.bd_rates:
        bd = Table(title="BD-rate against jpeg (negative = fewer bits)")
        for column in ("codec", "metric", "BD-rate %"):
            bd.add_column(column)
        for row in result.bd_rates:
            bd.add_row(row["codec"], row["metric"], _num(row["bd_rate_percent"], 1))
        console_out().print(bd)


def _num(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"
