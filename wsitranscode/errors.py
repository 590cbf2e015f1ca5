"""Errors that reach the user as one clear line."""

from __future__ import annotations

from pathlib import Path


class WsiTranscodeError(Exception):
    """An error with a message meant for people: what went wrong, where, and what to do.

    `path` and `frame` name the place; `str(err)` is the one-line message shown to the user.
    """

    def __init__(self, message: str, *, path: Path | str | None = None, frame: int | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.frame = frame
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.frame is not None:
            where.append(f"frame {self.frame}")
        prefix = ", ".join(where)
        text = " ".join(self.message.split())
        return f"{prefix}: {text}" if prefix else text


class InvalidInputError(WsiTranscodeError):
    """The input is not a usable DICOM WSI instance (not DICOM, truncated, missing attributes)."""


class UnsupportedError(WsiTranscodeError):
    """The input is valid but uses something this tool cannot handle (a transfer syntax, say)."""


class DecodeError(WsiTranscodeError):
    """A frame's bytes could not be decoded."""


class VerificationError(WsiTranscodeError):
    """A written frame did not match its source after decoding it again."""


class UsageError(WsiTranscodeError):
    """The command line or the requested operation is not allowed (exit code 2)."""
