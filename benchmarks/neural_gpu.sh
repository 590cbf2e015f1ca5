#!/usr/bin/env bash
# Neural codecs on a GPU machine: throughput by batch size, and the determinism check that
# matters there: frames encoded on the GPU decode to identical pixels on the CPU, in any batch.
# Usage (repository root, venv built): benchmarks/neural_gpu.sh [OUT_DIR]   (about 3 minutes)
# Results: OUT_DIR/neural_gpu.json, OUT_DIR/neural_cpu_decode_of_gpu.json; copy the tables
# printed here into docs/benchmarks.md ("Neural codecs").
set -euo pipefail
OUT="${1:-${OUT:-/tmp/neural-gpu}}"
mkdir -p "$OUT"
PY="${PYTHON:-.venv/bin/python}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" benchmarks/neural_throughput.py --device cuda --tiles 256 --batch-sizes 1,8,32,64 \
    --threads 4 --models he-small,bmshj2018-q3-untrained,bmshj2018-q8-untrained \
    --json "$OUT/neural_gpu.json"
"$PY" - "$OUT/neural_cpu_decode_of_gpu.json" <<'PYCODE'
import json, sys
import numpy as np
sys.path.insert(0, ".")
from benchmarks.neural_throughput import load_model, tissue_tiles
from wsitranscode.neural import engine

tiles = tissue_tiles(64)
report = []
for name in ("he-small", "bmshj2018-q3-untrained"):
    model = load_model(name)
    gpu_frames = engine.encode_tiles(model, tiles, device="cuda", batch_size=32)
    cpu_frames = engine.encode_tiles(model, tiles, device="cpu", batch_size=32)
    reference = engine.decode_frames(gpu_frames, device="cpu", batch_size=1)
    same = all(
        np.array_equal(a, b)
        for batch in (4, 64)
        for a, b in zip(reference, engine.decode_frames(gpu_frames, batch_size=batch))
    )
    gpu_decoded = engine.decode_frames(gpu_frames, device="cuda", batch_size=32)
    report.append({
        "model": name,
        "cpu_decode_of_gpu_frames_identical_across_batches": same,
        "gpu_and_cpu_bitstreams_identical": gpu_frames == cpu_frames,
        "gpu_decode_max_abs_diff_vs_cpu": int(max(
            np.abs(a.astype(int) - b).max() for a, b in zip(reference, gpu_decoded))),
    })
    print(json.dumps(report[-1]))
json.dump(report, open(sys.argv[1], "w"), indent=2)
PYCODE
