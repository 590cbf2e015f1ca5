"""`wsitranscode export`: series in a private transfer syntax (WebP, neural) back to a standard one.

The same engine as `recode`, restricted to series that hold private-syntax instances, with the
output's Source Image Sequence pointing at both predecessors (the private-syntax instance and
its own source) and the lossy compression history kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

STANDARD_CODECS = ("jxl", "j2k", "htj2k", "jpeg")


def add_parser(sub: Any, name: str, help_text: str) -> None:
    from wsitranscode.commands.recode import QUALITY_HELP, _quality, positive_int

    p = sub.add_parser(name, help=help_text, description=__doc__.splitlines()[0])
    p.add_argument("input", type=Path, help="folder with series in a private transfer syntax")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--codec", required=True, choices=STANDARD_CODECS, help="standard target codec")
    quality = p.add_mutually_exclusive_group()
    quality.add_argument(
        "--q", type=_quality, default=90, metavar="Q", help=QUALITY_HELP + " (default 90)"
    )
    quality.add_argument(
        "--lossless", action="store_true", help="add no further loss (larger files)"
    )
    p.add_argument(
        "--workers", type=positive_int, default=0, metavar="N", help="threads (default: all cores)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace earlier output")
    p.add_argument("--json", action="store_true", help="print the run result as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from wsitranscode.codecs.base import EncodeSettings
    from wsitranscode.commands.recode import execute_with_progress, report_outcome
    from wsitranscode.recode import RecodeOptions, open_run

    options = RecodeOptions(
        codec=args.codec,
        settings=EncodeSettings(quality=args.q, lossless=args.lossless),
        workers=args.workers,
        overwrite=args.overwrite,
        export=True,
    )
    with open_run(args.input, args.output, options) as job:
        result = execute_with_progress(job, args.json)
    return report_outcome(result, args.json, command="export")
