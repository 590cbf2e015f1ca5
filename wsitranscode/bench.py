"""Codec benchmark: rate-distortion and speed on tiles sampled from the user's own slides.

`run_bench(inputs, options, progress) -> BenchResult`; `write_outputs(result, out_dir)` writes
results.csv, results.json, matched.csv, bd_rate.csv, one PNG per plot and index.html (the
plots embedded, self-contained).

Protocol (Fischer et al. 2024, arXiv 2412.13137):

- Tiles: `tile_size` px squares at the highest magnification (a DICOM series' largest VOLUME
  level; an image file's full resolution), at seeded random positions with >= 30 % tissue, not
  overlapping (`quality.sampling`). Several inputs share the count round-robin, so small images
  give what they have and the larger ones the rest. Every codec sees the same tiles.
- Tracks: "initial" compresses the tiles themselves. With `precompress="jpeg:80"`, the tiles
  are first encoded with JPEG q80 and decoded ("jpeg80" track, the paper's recompression
  scenario); each codec then compresses those decoded tiles and is measured against the
  original tiles, so the metrics include the loss of the first compression.
- bpp: 8 x the length of the whole codestream each codec returns (headers and markers
  included, exactly the bytes a DICOM frame would hold, nothing else) / the tile's pixels; over a
  sweep point, total bits / total pixels (all tiles are the same size, so it is also the mean of
  the per-tile bpp, whose standard deviation is `bpp_std`).
- Metrics: every metric `validate` has (`validate.MetricSet`: PSNR, SSIM, MS-SSIM, LPIPS,
  ResNet18 feature similarity), mean and standard deviation over tiles (`validate.summarize`:
  exact tiles count as 100 dB PSNR). Learned metrics without weights are reported unavailable.
- Timing: single-thread = each tile encoded and decoded in turn on one thread (per-tile mean and
  standard deviation); all-cores = the same tiles through a pool of `workers` threads (imagecodecs
  releases the GIL), wall time / tiles. Codecs with `encode_batch` / `decode_batch` (neural) are
  timed batched: single-thread with torch limited to one thread. Mpx/s = tile pixels / time.
- Reference: the JPEG q80 point (JPEG q80 of the original tiles), marked on every plot.
- Matched bitrate: each metric's mean interpolated linearly in bpp along each codec's curve at
  0.25, 0.5, 1.0 bpp and at the JPEG q80 bpp (empty outside the measured range).
- BD-rate (Bjøntegaard, VCEG-M33) of every codec against JPEG on each requested metric with a
  dB quality axis: PSNR, and SSIM and MS-SSIM as -10 log10(1 - value) (LPIPS and the feature
  similarity have none, so no BD-rate): log(bpp) as a function of quality is interpolated for
  both curves, the difference is averaged over the overlapping quality interval, BD-rate =
  exp(mean) - 1 in percent (negative = fewer bits for the same quality). Interpolation:
  "pchip" (default; the piecewise cubic Hermite interpolation of the VCEG-AL22 / JVET CTC tools,
  which does not oscillate with many points) or "cubic" (the original least-squares cubic
  polynomial; degree n - 1 for fewer than 4 points).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wsitranscode import __version__
from wsitranscode.codecs.base import Codec, EncodeSettings, get_codec
from wsitranscode.errors import UsageError, WsiTranscodeError

DEFAULT_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95)
DEFAULT_METRICS = ("psnr", "ssim", "ms-ssim", "lpips", "feature")
MATCHED_BPPS = (0.25, 0.5, 1.0)
REFERENCE_CODEC, REFERENCE_QUALITY = "jpeg", 80
ANCHOR_CODEC = "jpeg"
BD_METRICS = ("psnr", "ssim", "ms-ssim")  # the metrics with a dB quality axis for BD-rate
# The summary entry that stands for each requested metric in tables (features: the pooled layer)
SUMMARY_NAMES = {"feature": "feature:avgpool"}
BD_METHODS = ("pchip", "cubic")
TIMINGS = ("both", "single", "parallel")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs")
MAX_MASK_SIDE = 1024
Progress = Callable[[str, int, int], None]  # (what is running, points done, points in all)


@dataclass(frozen=True)
class BenchOptions:
    codecs: tuple[str, ...]
    qualities: tuple[int, ...] = DEFAULT_QUALITIES
    tiles: int = 100
    tile_size: int = 224
    seed: int = 0
    precompress: str | None = None  # "codec:quality", e.g. "jpeg:80"
    metrics: tuple[str, ...] = DEFAULT_METRICS
    workers: int = 0  # 0: all cores
    timing: str = "both"
    bd_method: str = "pchip"
    effort: int | None = None
    codec_extra: tuple[tuple[str, str], ...] = ()  # EncodeSettings.extra: weights, model, device
    lpips_weights: Path | None = None
    feature_weights: Path | None = None
    allow_download: bool = True
    device: str | None = None
    executor: str = "local"  # where the codec points are coded: local, processes or dask
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if not self.codecs:
            raise UsageError("--codecs names no codec")
        if self.tiles < 1 or self.tile_size < 8:
            raise UsageError("--tiles must be at least 1 and --tile-size at least 8")
        if not self.qualities or any(not 0 <= q <= 100 for q in self.qualities):
            raise UsageError(f"qualities must lie in 0..100, got {list(self.qualities)}")
        if self.timing not in TIMINGS:
            raise UsageError(f"--timing must be one of {', '.join(TIMINGS)}")
        if self.bd_method not in BD_METHODS:
            raise UsageError(f"--bd-method must be one of {', '.join(BD_METHODS)}")
        if self.precompress is not None:
            parse_precompress(self.precompress)

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else os.cpu_count() or 1

    @property
    def track(self) -> str:
        if self.precompress is None:
            return "initial"
        name, quality = parse_precompress(self.precompress)
        return f"{name}{quality}"


def parse_qualities(text: str) -> tuple[int, ...]:
    """ "80", "50,80,90" or "A:B:STEP" (A to B inclusive, every STEP) as sorted unique ints."""
    text = text.strip()
    try:
        if ":" in text:
            start, stop, step = (int(p) for p in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            values = list(range(start, stop + 1, step))
        else:
            values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(
            f"--q takes a list such as 50,80,90 or a range such as 10:90:10, got {text!r}"
        ) from None
    if not values or any(not 0 <= q <= 100 for q in values):
        raise UsageError(f"--q values must lie in 0..100, got {text!r}")
    return tuple(sorted(set(values)))


def parse_precompress(text: str) -> tuple[str, int]:
    """ "jpeg:80" -> ("jpeg", 80)."""
    name, _, quality = text.partition(":")
    if not name or not quality.isdigit() or not 0 <= int(quality) <= 100:
        raise UsageError(f"--precompress takes CODEC:QUALITY such as jpeg:80, got {text!r}")
    return name, int(quality)


# ---------------------------------------------------------------------------------------------
# Tiles


@dataclass
class BenchTile:
    source: str
    x: int
    y: int
    pixels: np.ndarray  # tile_size x tile_size x 3, uint8


@dataclass
class _Opened:
    region: Callable[[int, int, int], np.ndarray]  # (x, y, size) -> size x size x 3 uint8
    mask: np.ndarray  # tissue mask over the whole image, at any lower resolution
    size: tuple[int, int]  # full-resolution width, height
    close: Callable[[], None] = lambda: None


class _Source:
    """Something to sample tiles from: a DICOM series, one DICOM instance, or an image file."""

    def __init__(self, name: str, opener: Callable[[], _Opened]):
        self.name = name
        self._opener = opener
        self._opened: _Opened | None = None

    def positions(self, count: int, tile_size: int, seed: int) -> list[tuple[int, int]]:
        from wsitranscode.quality.sampling import sample_tiles

        opened = self._open()
        return [(s.x, s.y) for s in sample_tiles(opened.mask, opened.size, tile_size, count, seed)]

    def read(self, x: int, y: int, tile_size: int) -> np.ndarray:
        return self._open().region(x, y, tile_size)

    def _open(self) -> _Opened:
        if self._opened is None:
            self._opened = self._opener()
        return self._opened

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = None


def _image_source(path: Path) -> _Source:
    def open_image() -> _Opened:
        from wsitranscode.quality.sampling import tissue_mask
        from wsitranscode.synth import load_tissue

        image = load_tissue(path)
        step = max(1, math.ceil(max(image.shape[:2]) / MAX_MASK_SIDE))
        mask = tissue_mask(np.ascontiguousarray(image[::step, ::step]))

        def region(x: int, y: int, size: int) -> np.ndarray:
            return np.ascontiguousarray(image[y : y + size, x : x + size])

        return _Opened(region, mask, (image.shape[1], image.shape[0]))

    return _Source(str(path), open_image)


def _dicom_source(name: str, top: Sequence[Any], smallest: Sequence[Any]) -> _Source:
    def open_level() -> _Opened:
        from wsitranscode.quality.sampling import tissue_mask
        from wsitranscode.validate import RegionReader

        thumb_reader = RegionReader(smallest)
        try:
            mask = tissue_mask(thumb_reader.thumbnail())
        finally:
            thumb_reader.close()
        reader = RegionReader(top)

        def region(x: int, y: int, size: int) -> np.ndarray:
            return reader.region(x, y, size, size)

        return _Opened(region, mask, (top[0].total_columns, top[0].total_rows), reader.close)

    return _Source(name, open_level)


def find_sources(inputs: Sequence[Path]) -> list[_Source]:
    """DICOM WSI series (largest VOLUME level), DICOM instance files and image files."""
    sources: list[_Source] = []
    for path in inputs:
        path = Path(path)
        if path.is_dir():
            found = _sources_in_folder(path)
        elif path.is_file():
            found = [_file_source(path)]
        else:
            raise UsageError("no such file or folder", path=path)
        if not found:
            raise UsageError(
                f"holds no VL whole-slide series and no image file ({', '.join(IMAGE_SUFFIXES)})",
                path=path,
            )
        sources += found
    return sources


def _sources_in_folder(folder: Path) -> list[_Source]:
    from wsitranscode.dicom.scan import scan

    sources = []
    for series in scan(folder).series:
        levels = series.levels()
        if levels:
            first = Path(levels[0].instances[0].path)
            name = f"{first.parent.relative_to(folder.parent)} ({series.uid[-12:]})"
            sources.append(_dicom_source(name, levels[0].instances, levels[-1].instances))
    images = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    return sources + [_image_source(p) for p in images]


def _file_source(path: Path) -> _Source:
    with path.open("rb") as handle:
        handle.seek(128)
        is_dicom = handle.read(4) == b"DICM"
    if is_dicom:
        from wsitranscode.dicom.scan import read_instance

        read = read_instance(path)
        if not isinstance(read, tuple):
            raise UsageError(f"not a usable WSI instance: {read.reason}", path=path)
        return _dicom_source(str(path), [read[0]], [read[0]])
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _image_source(path)
    raise UsageError(f"neither DICOM nor an image file ({', '.join(IMAGE_SUFFIXES)})", path=path)


def load_tiles(
    inputs: Sequence[Path], count: int, tile_size: int, seed: int
) -> tuple[list[BenchTile], list[str]]:
    """`count` tiles shared round-robin over the inputs' sources, and notes about shortfalls."""
    sources = find_sources(inputs)
    notes: list[str] = []
    try:
        candidates = [src.positions(count, tile_size, seed) for src in sources]
        for src, found in zip(sources, candidates, strict=True):
            if not found:
                notes.append(f"{src.name}: no {tile_size} px tile with >= 30 % tissue")
        chosen = _round_robin(candidates, count)
        tiles = [
            BenchTile(sources[i].name, x, y, sources[i].read(x, y, tile_size)) for i, x, y in chosen
        ]
    finally:
        for src in sources:
            src.close()
    if not tiles:
        raise UsageError(f"no {tile_size} px tile with enough tissue in any input")
    if len(tiles) < count:
        notes.append(f"{len(tiles)} of {count} tiles found on tissue (no overlap, >= 30 % tissue)")
    return tiles, notes


def _round_robin(candidates: list[list[tuple[int, int]]], count: int) -> list[tuple[int, int, int]]:
    chosen: list[tuple[int, int, int]] = []
    depth = 0
    while len(chosen) < count and any(depth < len(c) for c in candidates):
        for index, found in enumerate(candidates):
            if depth < len(found) and len(chosen) < count:
                chosen.append((index, *found[depth]))
        depth += 1
    return sorted(chosen)


# ---------------------------------------------------------------------------------------------
# Encoding, decoding, timing


@dataclass
class Coded:
    """One codec at one setting over all tiles: codestreams, decoded tiles and timings (s)."""

    encoded: list[bytes]
    decoded: list[np.ndarray]
    encode_single: list[float] = field(default_factory=list)  # per tile (batched: one value)
    decode_single: list[float] = field(default_factory=list)
    encode_parallel: float | None = None  # wall time for all tiles
    decode_parallel: float | None = None
    batched: bool = False


def _is_batched(codec: Codec) -> bool:
    return callable(getattr(codec, "encode_batch", None)) and callable(
        getattr(codec, "decode_batch", None)
    )


def code_tiles(
    codec: Codec, settings: EncodeSettings, tiles: Sequence[np.ndarray], timing: str, workers: int
) -> Coded:
    """Encode and decode every tile, timed as `timing` asks (see module doc)."""
    if _is_batched(codec):
        return _code_batched(codec, settings, tiles, timing)
    if timing == "parallel":
        encoded, enc_wall = _timed_pool(lambda t: codec.encode(t, settings), tiles, workers)
        decoded, dec_wall = _timed_pool(codec.decode, encoded, workers)
        return Coded(encoded, decoded, encode_parallel=enc_wall, decode_parallel=dec_wall)
    encoded, enc_times = _timed_each(lambda t: codec.encode(t, settings), tiles)
    decoded, dec_times = _timed_each(codec.decode, encoded)
    coded = Coded(encoded, decoded, enc_times, dec_times)
    if timing == "both":
        _, coded.encode_parallel = _timed_pool(lambda t: codec.encode(t, settings), tiles, workers)
        _, coded.decode_parallel = _timed_pool(codec.decode, encoded, workers)
    return coded


def _timed_each(function: Callable[[Any], Any], items: Sequence[Any]) -> tuple[list[Any], list]:
    results, seconds = [], []
    for item in items:
        start = time.perf_counter()
        results.append(function(item))
        seconds.append(time.perf_counter() - start)
    return results, seconds


def _timed_pool(
    function: Callable[[Any], Any], items: Sequence[Any], workers: int
) -> tuple[list[Any], float]:
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        start = time.perf_counter()
        results = list(pool.map(function, items))
        return results, time.perf_counter() - start


def _code_batched(
    codec: Any, settings: EncodeSettings, tiles: Sequence[np.ndarray], timing: str
) -> Coded:
    def run_once() -> tuple[list[bytes], list[np.ndarray], float, float]:
        start = time.perf_counter()
        encoded = list(codec.encode_batch(list(tiles), settings))
        middle = time.perf_counter()
        decoded = [np.asarray(d) for d in codec.decode_batch(encoded)]
        return encoded, decoded, middle - start, time.perf_counter() - middle

    coded: Coded | None = None
    if timing in ("single", "both"):
        with _one_torch_thread():
            encoded, decoded, enc, dec = run_once()
        coded = Coded(encoded, decoded, [enc / len(tiles)], [dec / len(tiles)], batched=True)
    if timing in ("parallel", "both"):
        encoded, decoded, enc, dec = run_once()
        coded = coded or Coded(encoded, decoded, batched=True)
        coded.encode_parallel, coded.decode_parallel = enc, dec
    assert coded is not None
    return coded


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# Metrics


class MetricRunner:
    """validate's metrics over (reference, decoded) tile pairs; numpy ones on a thread pool."""

    def __init__(self, options: BenchOptions):
        from wsitranscode.validate import ValidateOptions

        numpy_names = tuple(m for m in options.metrics if m in ("psnr", "ssim", "ms-ssim"))
        learned_names = tuple(m for m in options.metrics if m in ("lpips", "feature"))
        common = {
            "lpips_weights": options.lpips_weights,
            "feature_weights": options.feature_weights,
            "allow_download": options.allow_download,
            "device": options.device,
        }
        self.workers = options.worker_count
        self.numpy_options = ValidateOptions(metrics=numpy_names, **common) if numpy_names else None
        self.learned_options = (
            ValidateOptions(metrics=learned_names, **common) if learned_names else None
        )
        self._learned: Any = None

    @property
    def unavailable(self) -> dict[str, str]:
        return dict(self._learned.unavailable) if self._learned is not None else {}

    def measure(
        self, references: Sequence[np.ndarray], decoded: Sequence[np.ndarray], label: str
    ) -> dict[str, dict[str, Any]]:
        """Per metric: n, mean, std, p5, worst (as `validate.summarize`)."""
        from wsitranscode.quality.metrics import to_rgb8
        from wsitranscode.validate import MetricSet, TileResult, summarize

        results = [
            TileResult(label, "sample", 0, "", None, 0, 0, ref.shape[1], ref.shape[0])
            for ref in references
        ]
        pairs = [
            (tile, (ref, to_rgb8(dec)))
            for tile, ref, dec in zip(results, references, decoded, strict=True)
        ]
        if self.numpy_options is not None:
            numpy_set = MetricSet(self.numpy_options)
            chunks = [pairs[i :: self.workers] for i in range(self.workers)]
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                list(pool.map(numpy_set.measure, [c for c in chunks if c]))
        if self.learned_options is not None:
            if self._learned is None:
                self._learned = MetricSet(self.learned_options)
            self._learned.measure(pairs)
        return summarize(results)


# ---------------------------------------------------------------------------------------------
# The sweep


@dataclass
class BenchResult:
    options: dict[str, Any]
    track: str
    tiles: list[dict[str, Any]]
    points: list[dict[str, Any]]
    reference: dict[str, Any] | None
    bd_rates: list[dict[str, Any]]
    matched: list[dict[str, Any]]
    notes: list[str]
    unavailable: dict[str, str]
    environment: dict[str, Any]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "bench",
            "tool": f"wsitranscode {__version__}",
            "created": self.created,
            "track": self.track,
            "options": self.options,
            "environment": self.environment,
            "notes": self.notes,
            "unavailable": self.unavailable,
            "reference": self.reference,
            "points": self.points,
            "bd_rates": self.bd_rates,
            "matched": self.matched,
            "tiles": self.tiles,
        }


def run_bench(
    inputs: Sequence[Path], options: BenchOptions, progress: Progress | None = None
) -> BenchResult:
    codecs = _usable_codecs(options)
    tiles, notes = load_tiles(inputs, options.tiles, options.tile_size, options.seed)
    notes += codecs.notes
    originals = [t.pixels for t in tiles]
    runner = MetricRunner(options)
    codec_inputs = _precompressed(originals, options) if options.precompress else originals
    total = 1 + len(codecs.usable) * len(options.qualities)
    report = progress or (lambda *_: None)

    report(f"reference {REFERENCE_CODEC} q{REFERENCE_QUALITY}", 0, total)
    reference = _reference_point(originals, options, runner)
    points: list[dict[str, Any]] = []
    executor = _remote_executor(options)
    try:
        remote = _submit_points(executor, codecs.usable, codec_inputs, options)
        for codec in codecs.usable:
            for quality in options.qualities:
                report(f"{codec.name} q{quality}", len(points) + 1, total)
                settings = _settings(options, quality)
                try:
                    coded = remote[codec.name, quality].result() if remote else None
                    points.append(
                        _point(codec, settings, codec_inputs, originals, options, runner, coded)
                    )
                except WsiTranscodeError as err:
                    notes.append(f"{codec.name} q{quality}: {err.one_line()}")
    finally:
        if executor is not None:
            executor.close()
    report("done", total, total)
    result = BenchResult(
        options=_options_json(inputs, options),
        track=options.track,
        tiles=[{"source": t.source, "x": t.x, "y": t.y} for t in tiles],
        points=points,
        reference=reference,
        bd_rates=bd_rate_table(points, options.bd_method, options.metrics),
        matched=matched_table(points, reference),
        notes=notes,
        unavailable=runner.unavailable,
        environment=_environment(options),
    )
    if ANCHOR_CODEC not in {p["codec"] for p in points}:
        result.notes.append(f"BD-rate needs {ANCHOR_CODEC} among the codecs: not computed")
    return result


@dataclass
class _Codecs:
    usable: list[Codec]
    notes: list[str]


def _usable_codecs(options: BenchOptions) -> _Codecs:
    usable, notes = [], []
    for name in dict.fromkeys(options.codecs):
        codec = get_codec(name)  # UsageError for unknown names, listing the known ones
        ok, why = codec.available()
        if not ok:
            notes.append(f"{name} skipped: {why}")
            continue
        try:
            target = codec.target(_settings(options, options.qualities[0]))
        except WsiTranscodeError as err:  # a neural codec without its weights, say
            notes.append(f"{name} skipped: {err.one_line()}")
            continue
        if target.compresses_source_bytes or not target.lossy:
            notes.append(f"{name} skipped: it has no quality setting to sweep")
            continue
        usable.append(codec)
    if not usable:
        raise UsageError("no usable codec to benchmark: " + "; ".join(notes))
    return _Codecs(usable, notes)


def _settings(options: BenchOptions, quality: int) -> EncodeSettings:
    return EncodeSettings(quality=quality, effort=options.effort, extra=options.codec_extra)


def _precompressed(originals: list[np.ndarray], options: BenchOptions) -> list[np.ndarray]:
    name, quality = parse_precompress(options.precompress or "")
    codec = get_codec(name)
    settings = EncodeSettings(quality=quality)
    return [np.ascontiguousarray(codec.decode(codec.encode(t, settings))) for t in originals]


def _reference_point(
    originals: list[np.ndarray], options: BenchOptions, runner: MetricRunner
) -> dict[str, Any]:
    codec = get_codec(REFERENCE_CODEC)
    settings = EncodeSettings(quality=REFERENCE_QUALITY)
    encoded = [codec.encode(t, settings) for t in originals]
    decoded = [codec.decode(b) for b in encoded]
    bpp, bpp_std = _bpp(encoded, originals)
    return {
        "codec": REFERENCE_CODEC,
        "quality": REFERENCE_QUALITY,
        "description": codec.target(settings).description,
        "bpp": bpp,
        "bpp_std": bpp_std,
        "metrics": runner.measure(originals, decoded, "reference"),
    }


def _point(
    codec: Codec,
    settings: EncodeSettings,
    inputs: list[np.ndarray],
    originals: list[np.ndarray],
    options: BenchOptions,
    runner: MetricRunner,
    coded: Coded | None = None,
) -> dict[str, Any]:
    if coded is None:
        coded = code_tiles(codec, settings, inputs, options.timing, options.worker_count)
    bpp, bpp_std = _bpp(coded.encoded, inputs)
    return {
        "track": options.track,
        "codec": codec.name,
        "quality": settings.quality,
        "description": codec.target(settings).description,
        "tiles": len(inputs),
        "bpp": bpp,
        "bpp_std": bpp_std,
        "metrics": runner.measure(originals, coded.decoded, f"{codec.name} q{settings.quality}"),
        "timing": _timing(coded, inputs, options.worker_count),
    }


@dataclass(frozen=True)
class CodeTask:
    """One codec point, by value, for an executor: the codec is looked up where it runs."""

    codec: str
    settings: EncodeSettings
    tiles: tuple[np.ndarray, ...]
    timing: str
    workers: int


def code_task(task: CodeTask) -> Coded:
    return code_tiles(get_codec(task.codec), task.settings, task.tiles, task.timing, task.workers)


def _remote_executor(options: BenchOptions) -> Any:
    """With --executor processes|dask every (codec, quality) point is coded and timed on a
    worker (its timings are that worker's); the metrics are computed here."""
    if options.executor == "local":
        return None
    from wsitranscode.execute import make_executor

    return make_executor(options.executor, options.workers, options.scheduler)


def _submit_points(
    executor: Any, codecs: Sequence[Codec], inputs: list[np.ndarray], options: BenchOptions
) -> dict[tuple[str, int], Any]:
    if executor is None:
        return {}
    tiles = tuple(inputs)
    threads = max(1, options.worker_count // max(1, executor.workers))
    return {
        (codec.name, quality): executor.submit(
            code_task,
            CodeTask(codec.name, _settings(options, quality), tiles, options.timing, threads),
        )
        for codec in codecs
        for quality in options.qualities
    }


def _bpp(encoded: Sequence[bytes], tiles: Sequence[np.ndarray]) -> tuple[float, float]:
    per_tile = np.array(
        [8.0 * len(b) / (t.shape[0] * t.shape[1]) for b, t in zip(encoded, tiles, strict=True)]
    )
    pixels = sum(t.shape[0] * t.shape[1] for t in tiles)
    total = 8.0 * sum(len(b) for b in encoded) / pixels
    return round(total, 6), round(float(per_tile.std()), 6)


def _timing(coded: Coded, tiles: Sequence[np.ndarray], workers: int) -> dict[str, Any]:
    n = len(tiles)
    megapixels = sum(t.shape[0] * t.shape[1] for t in tiles) / 1e6
    out: dict[str, Any] = {"workers": workers, "batched": coded.batched}
    for side, single, parallel in (
        ("encode", coded.encode_single, coded.encode_parallel),
        ("decode", coded.decode_single, coded.decode_parallel),
    ):
        if single:
            seconds = single[0] * n if coded.batched else float(np.sum(single))
            out[f"{side}_ms_1t"] = round(1000 * seconds / n, 4)
            # A batch gives one time for all tiles: no spread over tiles to report.
            out[f"{side}_ms_1t_std"] = None if coded.batched else round(1000 * np.std(single), 4)
            out[f"{side}_mpxs_1t"] = round(megapixels / seconds, 4) if seconds else None
        if parallel is not None:
            out[f"{side}_ms_all"] = round(1000 * parallel / n, 4)
            out[f"{side}_mpxs_all"] = round(megapixels / parallel, 4) if parallel else None
    return out


def _options_json(inputs: Sequence[Path], options: BenchOptions) -> dict[str, Any]:
    data = {k: v for k, v in options.__dict__.items() if not k.endswith("_weights")}
    data |= {
        "inputs": [str(p) for p in inputs],
        "codecs": list(options.codecs),
        "qualities": list(options.qualities),
        "metrics": list(options.metrics),
        "workers": options.worker_count,
    }
    return data


def _environment(options: BenchOptions) -> dict[str, Any]:
    import imagecodecs

    return {
        "cpu_count": os.cpu_count(),
        "workers": options.worker_count,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "imagecodecs": imagecodecs.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Bjøntegaard delta rate and matched-bitrate interpolation


def summary_names(metrics: Sequence[str]) -> list[str]:
    """The summary entries to show for the requested metrics, in their order."""
    return [SUMMARY_NAMES.get(m, m) for m in metrics]


def bd_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """The requested metrics that have a BD-rate (a dB quality axis), in the requested order."""
    return tuple(m for m in metrics if m in BD_METRICS)


def bd_metric_value(metric: str, value: float | None) -> float | None:
    """The quality axis of the BD integration: PSNR in dB, SSIM and MS-SSIM as
    -10 log10(1 - value)."""
    if value is None or not math.isfinite(value):
        return None
    if metric in ("ssim", "ms-ssim"):
        return -10.0 * math.log10(1.0 - value) if value < 1.0 else None
    return value


def bd_rate(
    reference: Sequence[tuple[float, float]],
    test: Sequence[tuple[float, float]],
    method: str = "pchip",
) -> float | None:
    """Bjøntegaard delta rate in percent of `test` against `reference`, from (bpp, quality).

    None when a curve has fewer than two usable points or the quality ranges do not overlap.
    """
    ref, tst = _log_rate_curve(reference), _log_rate_curve(test)
    if ref is None or tst is None:
        return None
    low = max(ref[0][0], tst[0][0])
    high = min(ref[0][-1], tst[0][-1])
    if not high > low:
        return None
    integral_ref = _integral(ref, low, high, method)
    integral_test = _integral(tst, low, high, method)
    mean_difference = (integral_test - integral_ref) / (high - low)
    return (math.exp(mean_difference) - 1.0) * 100.0


def _log_rate_curve(points: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray] | None:
    """(quality ascending, log rate), equal qualities merged by their mean log rate."""
    usable = [(q, math.log(b)) for b, q in points if b and b > 0 and q is not None]
    usable = [(q, r) for q, r in usable if math.isfinite(q) and math.isfinite(r)]
    if not usable:
        return None
    merged: dict[float, list[float]] = {}
    for q, r in usable:
        merged.setdefault(q, []).append(r)
    qualities = np.array(sorted(merged))
    if len(qualities) < 2:
        return None
    return qualities, np.array([float(np.mean(merged[q])) for q in qualities])


def _integral(curve: tuple[np.ndarray, np.ndarray], low: float, high: float, method: str) -> float:
    qualities, log_rates = curve
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        return float(PchipInterpolator(qualities, log_rates).integrate(low, high))
    degree = min(3, len(qualities) - 1)
    antiderivative = np.polyint(np.polyfit(qualities, log_rates, degree))
    return float(np.polyval(antiderivative, high) - np.polyval(antiderivative, low))


def bd_rate_table(
    points: Sequence[dict[str, Any]], method: str, metrics: Sequence[str] = BD_METRICS
) -> list[dict[str, Any]]:
    """BD-rate of every codec against `ANCHOR_CODEC`, per metric of `metrics` that has one."""
    curves = _curves(points)
    anchor = curves.get(ANCHOR_CODEC)
    if anchor is None:
        return []
    rows = []
    for codec, codec_points in curves.items():
        for metric in bd_metrics(metrics):
            ref = [(p["bpp"], bd_metric_value(metric, _mean(p, metric))) for p in anchor]
            tst = [(p["bpp"], bd_metric_value(metric, _mean(p, metric))) for p in codec_points]
            value = bd_rate(ref, tst, method)
            rows.append(
                {
                    "codec": codec,
                    "anchor": ANCHOR_CODEC,
                    "metric": metric,
                    "method": method,
                    "bd_rate_percent": None if value is None else round(value, 3),
                }
            )
    return rows


def value_at_bpp(points: Sequence[tuple[float, float]], bpp: float) -> float | None:
    """A curve's value at `bpp`, linear between the measured points; None outside them."""
    usable = sorted((b, v) for b, v in points if v is not None and math.isfinite(v))
    if not usable or not usable[0][0] <= bpp <= usable[-1][0]:
        return None
    rates, values = zip(*usable, strict=True)
    return float(np.interp(bpp, rates, values))


def matched_table(
    points: Sequence[dict[str, Any]], reference: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Every metric of every codec at `MATCHED_BPPS` and at the JPEG q80 bpp."""
    targets = [(f"{b:g} bpp", b) for b in MATCHED_BPPS]
    if reference is not None:
        label = f"{REFERENCE_CODEC} q{REFERENCE_QUALITY} ({reference['bpp']:.3f} bpp)"
        targets.append((label, reference["bpp"]))
    rows = []
    for codec, codec_points in _curves(points).items():
        for metric in _metric_names(codec_points):
            curve = [(p["bpp"], _mean(p, metric)) for p in codec_points]
            for label, bpp in targets:
                value = value_at_bpp(curve, bpp)
                rows.append(
                    {
                        "codec": codec,
                        "metric": metric,
                        "at": label,
                        "bpp": round(bpp, 6),
                        "value": None if value is None else round(value, 6),
                    }
                )
    return rows


def _curves(points: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    curves: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        curves.setdefault(p["codec"], []).append(p)
    for codec_points in curves.values():
        codec_points.sort(key=lambda p: p["bpp"])
    return curves


def _metric_names(points: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for p in points:
        names += [m for m in p["metrics"] if m not in names]
    return names


def _mean(point: dict[str, Any], metric: str) -> float | None:
    return point["metrics"].get(metric, {}).get("mean")


# ---------------------------------------------------------------------------------------------
# Files


def point_rows(result: BenchResult) -> tuple[list[str], list[dict[str, Any]]]:
    """results.csv: one row per codec and quality (the JPEG q80 reference first)."""
    metric_names = _metric_names(
        [*([result.reference] if result.reference else []), *result.points]
    )
    timing_keys = [
        f"{side}_{kind}"
        for side in ("encode", "decode")
        for kind in ("ms_1t", "ms_1t_std", "mpxs_1t", "ms_all", "mpxs_all")
    ]
    columns = ["track", "codec", "quality", "reference", "tiles", "bpp", "bpp_std"]
    columns += [f"{m}_{s}" for m in metric_names for s in ("mean", "std")]
    columns += [*timing_keys, "workers", "description"]
    rows = []
    entries = [(result.reference, True)] if result.reference else []
    entries += [(p, False) for p in result.points]
    for point, is_reference in entries:
        row: dict[str, Any] = {
            "track": result.track,
            "codec": point["codec"],
            "quality": point["quality"],
            "reference": is_reference,
            "tiles": point.get("tiles", len(result.tiles)),
            "bpp": point["bpp"],
            "bpp_std": point["bpp_std"],
            "description": point["description"],
        }
        for m in metric_names:
            stats = point["metrics"].get(m, {})
            row[f"{m}_mean"], row[f"{m}_std"] = stats.get("mean"), stats.get("std")
        row |= {k: v for k, v in point.get("timing", {}).items() if k in columns}
        rows.append(row)
    return columns, rows


def write_outputs(result: BenchResult, out_dir: Path) -> dict[str, Path]:
    """results.csv, results.json, matched.csv, bd_rate.csv, plots (*.png) and index.html."""
    from wsitranscode.bench_plots import render_html, save_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / "results.csv",
        "json": out_dir / "results.json",
        "matched": out_dir / "matched.csv",
        "bd_rate": out_dir / "bd_rate.csv",
        "html": out_dir / "index.html",
    }
    columns, rows = point_rows(result)
    _write_csv(paths["csv"], columns, rows)
    _write_csv(paths["matched"], ["codec", "metric", "at", "bpp", "value"], result.matched)
    _write_csv(
        paths["bd_rate"],
        ["codec", "anchor", "metric", "method", "bd_rate_percent"],
        result.bd_rates,
    )
    plots = save_plots(result, out_dir)
    paths["json"].write_text(
        json.dumps(result.to_json() | {"plots": [p.name for p in plots]}, indent=2) + "\n"
    )
    paths["html"].write_text(render_html(result, plots), encoding="utf-8")
    return paths | {f"plot:{p.stem}": p for p in plots}


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})


def load_result(path: Path) -> dict[str, Any]:
    """A results.json (or the folder holding it) as written by `write_outputs`."""
    path = path / "results.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"not a bench results.json: {err}", path=path) from err
    if data.get("kind") != "bench":
        raise UsageError("not a bench results.json", path=path)
    return data
