"""Tiles per second per quality metric on this machine's CPU (224 x 224 RGB tissue tiles).

Usage: python benchmarks/metrics_throughput.py [--tiles N] [--device cpu]
LPIPS and the feature similarity run with seeded random weights created here (throughput does
not depend on the weights' values); their numbers are speed only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from wsitranscode import synth
from wsitranscode.quality.metrics import ms_ssim, psnr, ssim

SVS = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/tissue/histolab/tcga-cr-7395-01a-01-ts1.svs"
)


def tiles(count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    image = (
        synth.load_tissue(SVS, region=(0, 1250, 1000, 750))
        if SVS.is_file()
        else synth.synthetic_tissue(750, 1000, seed=0)
    )
    rng = np.random.default_rng(0)
    originals, recoded = [], []
    for _ in range(count):
        y, x = rng.integers(0, image.shape[0] - 224), rng.integers(0, image.shape[1] - 224)
        tile = np.ascontiguousarray(image[y : y + 224, x : x + 224])
        originals.append(tile)
        recoded.append(np.clip(tile + rng.normal(0, 6, tile.shape), 0, 255).astype(np.uint8))
    return originals, recoded


def rate(fn, count: int) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    a, b = tiles(args.tiles)
    n = len(a)
    results = {
        "psnr": rate(lambda: [psnr(x, y) for x, y in zip(a, b, strict=True)], n),
        "ssim": rate(lambda: [ssim(x, y) for x, y in zip(a, b, strict=True)], n),
        "ms-ssim": rate(lambda: [ms_ssim(x, y) for x, y in zip(a, b, strict=True)], n),
    }
    import torch
    import torchvision

    from wsitranscode.quality.perceptual import FeatureSimilarity, Lpips

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        alex = Path(tmp) / "alexnet.pth"
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), alex)
        resnet = Path(tmp) / "resnet18.pth"
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
        lpips = Lpips.load(alex, allow_download=False, device=args.device)
        feature = FeatureSimilarity.load(resnet, allow_download=False, device=args.device)
        lpips.measure(a[:2], b[:2])  # warm-up
        feature.measure(a[:2], b[:2])
        results["lpips"] = rate(lambda: lpips.measure(a, b), n)
        results["feature (6 depths)"] = rate(lambda: feature.measure(a, b), n)
    print(f"{n} tile pairs of 224x224, torch threads {torch.get_num_threads()}, {args.device}")
    print("| metric | tiles/s |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.1f} |")


if __name__ == "__main__":
    main()
