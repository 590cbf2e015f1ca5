"""Rate-distortion of the shipped neural model(s) against JPEG, JPEG XL and WebP on tissue.

Tiles: every non-overlapping 128x128 tile of the held-out tissue images (the validation slides of
the shipped model: never seen in training), and, for contrast, 32 tiles from the slide it was
trained on. Per codec and quality: mean bits per pixel (the frame's bytes as stored) and mean
PSNR; for each model, the classic codecs' PSNR interpolated at the model's bpp.

    .venv/bin/python benchmarks/neural_rd.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TISSUE = ROOT.parent / "shared/data/tissue"
HELD_OUT = [
    TISSUE / "histolab/tissue-level0-4302-10273-4814-10785.png",
    TISSUE / "torchstain/source.png",
]
TRAINING_SLIDE = TISSUE / "histolab/tcga-cr-7395-01a-01-ts1.svs"
QUALITIES = (10, 30, 50, 70, 80, 90, 95)
TILE = 128


def grid_tiles(path: Path) -> list[np.ndarray]:
    from wsitranscode.synth import load_tissue

    image = load_tissue(path)
    h, w = image.shape[:2]
    positions = [(y, x) for y in range(0, h - TILE + 1, TILE) for x in range(0, w - TILE + 1, TILE)]
    return [np.ascontiguousarray(image[y : y + TILE, x : x + TILE]) for y, x in positions]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse else 99.0


def measure(encode, decode, tiles: list[np.ndarray]) -> dict[str, float]:
    payloads = [encode(t) for t in tiles]
    decoded = [decode(p) for p in payloads]
    bpp = [8 * len(p) / (TILE * TILE) for p in payloads]
    values = [psnr(t, d) for t, d in zip(tiles, decoded, strict=True)]
    return {"bpp": float(np.mean(bpp)), "psnr": float(np.mean(values)),
            "psnr_std": float(np.std(values))}  # fmt: skip


def curves(tiles: list[np.ndarray]) -> dict[str, list[dict]]:
    from wsitranscode.codecs.base import EncodeSettings, get_codec

    out = {}
    for name in ("jpeg", "jxl", "webp"):
        codec = get_codec(name)
        points = []
        for q in QUALITIES:
            settings = EncodeSettings(quality=q)
            points.append(
                {
                    "q": q,
                    **measure(lambda t, s=settings, c=codec: c.encode(t, s), codec.decode, tiles),
                }
            )
        out[name] = points
    return out


def psnr_at(points: list[dict], bpp: float) -> float | None:
    ordered = sorted(points, key=lambda p: p["bpp"])
    rates = [p["bpp"] for p in ordered]
    if not rates[0] <= bpp <= rates[-1]:
        return None
    return float(np.interp(bpp, rates, [p["psnr"] for p in ordered]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import wsitranscode.codecs.neural  # noqa: F401
    from wsitranscode.codecs.base import EncodeSettings, get_codec
    from wsitranscode.neural.data import ImageSlide, sample_tissue_tiles
    from wsitranscode.neural.registry import list_models, shipped_dir

    sets = {
        "held-out": [t for p in HELD_OUT for t in grid_tiles(p)],
        "training slide": sample_tissue_tiles(ImageSlide(TRAINING_SLIDE), TILE, 32, seed=99),
    }
    report = {}
    for label, tiles in sets.items():
        classic = curves(tiles)
        models = {}
        for info in (m for m in list_models() if m.path.parent == shipped_dir()):
            codec = get_codec(f"path-{info.name}")
            settings = EncodeSettings(extra=(("device", "cpu"),))
            point = measure(lambda t, c=codec, s=settings: c.encode(t, s), codec.decode, tiles)
            point["classic_psnr_at_same_bpp"] = {
                n: psnr_at(c, point["bpp"]) for n, c in classic.items()
            }
            models[info.name] = point
        report[label] = {"tiles": len(tiles), "classic": classic, "neural": models}
        print(f"## {label}: {len(tiles)} tiles of {TILE}x{TILE}")
        print("| codec | q | bpp | PSNR dB (std) |")
        print("|---|---|---|---|")
        for name, points in classic.items():
            for p in points:
                quality = f"{p['psnr']:.2f} ({p['psnr_std']:.2f})"
                print(f"| {name} | {p['q']} | {p['bpp']:.3f} | {quality} |")
        for name, p in models.items():
            same = ", ".join(
                f"{n} {v:.2f}" if v is not None else f"{n} n/a"
                for n, v in p["classic_psnr_at_same_bpp"].items()
            )
            print(f"| path-{name} | - | {p['bpp']:.3f} | {p['psnr']:.2f} ({p['psnr_std']:.2f}) |")
            print(f"\nAt the same bpp the classic codecs reach: {same} dB\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
