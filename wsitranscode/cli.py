"""Command line: parse arguments and dispatch to a command module. No domain logic here.

Each command lives in `wsitranscode/commands/<name>.py` and exposes
`add_parser(subparsers) -> None` and `run(args) -> int`. Modules are imported only when needed
so that `wsitranscode --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import warnings

from wsitranscode import __version__

COMMANDS: dict[str, str] = {
    "ls": "List the DICOM whole-slide series in a folder.",
    "recode": "Re-encode every frame of every WSI series into new DICOM instances.",
    "validate": "Compare recoded series with their originals.",
    "report": "Aggregate validation reports and runs into one report.",
    "savings": "Project measured savings onto a whole archive or IDC collection.",
    "fetch": "Download slides from NCI Imaging Data Commons.",
    "bench": "Compare codecs on sampled tiles (rate-distortion and speed).",
    "export": "Turn a series in a private transfer syntax into a standard one.",
    "train": "Train a neural codec on your own slides.",
}


def _command_module(name: str):
    return importlib.import_module(f"wsitranscode.commands.{name.replace('-', '_')}")


def _available_commands() -> dict[str, str]:
    from importlib.util import find_spec

    return {
        name: help_text
        for name, help_text in COMMANDS.items()
        if find_spec(f"wsitranscode.commands.{name.replace('-', '_')}") is not None
    }


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsitranscode",
        description="Make whole-slide DICOM archives smaller while proving what was kept.",
    )
    parser.add_argument("--version", action="version", version=f"wsitranscode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in _available_commands().items():
        if only is None or name == only:
            _command_module(name).add_parser(sub, name, help_text)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    only = chosen if chosen in COMMANDS else None
    parser = build_parser(only)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if exit_.code in (0, None) else 2
    if args.command is None:
        parser.print_help()
        return 2
    from wsitranscode.errors import WsiTranscodeError

    # pydicom warns about invalid values it reads (long UIDs, bad DS); the derived header records
    # them as "inherited" in the run record, which is where users look for them.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
    # compressai scripts a helper with torch.jit.script at import; torch 2.14 calls that
    # deprecated. Nothing for the user to act on.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )
    try:
        return int(_command_module(args.command).run(args))
    except WsiTranscodeError as err:
        from wsitranscode.commands import console_err

        console_err().print(f"[bold red]error:[/] {err.one_line()}", soft_wrap=True)
        from wsitranscode.errors import UsageError

        return 2 if isinstance(err, UsageError) else 1
    except KeyboardInterrupt:
        # the command has stopped cleanly; another Ctrl-C now would only spoil the exit status
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("interrupted", file=sys.stderr)
        return 130
