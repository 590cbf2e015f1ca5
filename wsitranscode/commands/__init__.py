"""One module per CLI command: `add_parser(subparsers, name, help)` and `run(args) -> int`."""

from __future__ import annotations

import json
import sys
from collections import Counter
from functools import cache
from typing import Any

from rich.console import Console

# Tables printed into a pipe or a log file would wrap at rich's default of 80 columns.
_PIPE_WIDTH = 160


@cache
def console_out() -> Console:
    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else _PIPE_WIDTH)


@cache
def console_err() -> Console:
    return Console(
        stderr=True,
        highlight=False,
        emoji=False,
        width=None if sys.stderr.isatty() else _PIPE_WIDTH,
    )


def skipped_summary(skipped: list[Any]) -> str:
    """'skipped 3 files: 2 symbolic link (...), 1 not DICOM', from scan's SkippedFile list;
    empty when nothing was skipped. Links get the option that follows them."""
    if not skipped:
        return ""
    counts = Counter(s.reason.split(":")[0] for s in skipped)
    parts = [f"{n} {reason}" for reason, n in counts.most_common()]
    parts = [p + " (--follow-symlinks follows them)" if "symbolic link" in p else p for p in parts]
    return f"skipped {len(skipped)} file{'s' if len(skipped) > 1 else ''}: {', '.join(parts)}"


def print_json(payload: Any) -> None:
    """Machine-readable output on stdout: one JSON document, nothing else."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


def add_executor_arguments(parser: Any, what: str) -> Any:
    """--executor and --scheduler, the same for every command that can run on a cluster."""
    group = parser.add_argument_group("where the work runs")
    group.add_argument(
        "--executor", choices=("local", "processes", "dask"), default="local",
        help=f"where {what} run: local threads (default), local processes, or a Dask cluster",
    )  # fmt: skip
    group.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="Dask scheduler address (tcp://host:8786); default: a local cluster",
    )  # fmt: skip
    return group


def codec_extra(args: Any) -> tuple[tuple[str, str], ...]:
    """Neural codec options from --weights/--model/--device/--batch-size, as the codecs read
    them from EncodeSettings.extra (recode and bench)."""
    pairs = {
        "weights": args.weights and str(args.weights.resolve()),
        "model": args.model and str(args.model.resolve()),
        "device": args.device if args.device in ("auto", "cpu", "cuda") else None,
        "batch_size": args.batch_size and str(args.batch_size),
    }
    return tuple((k, v) for k, v in pairs.items() if v)
