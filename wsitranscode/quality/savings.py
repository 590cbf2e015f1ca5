"""Project measured compression ratios onto a whole archive or an IDC collection.

Measured series (from validate reports or recode run records) are grouped by the kind of source
they came from: its set of transfer syntaxes and photometric interpretations (IDC's RMS slides,
for instance, mix uncompressed RGB levels with reversible JPEG 2000 YBR_RCT ones). A validate
report names them; a run record does not, so they are read from the source files it names, else
taken from the archive series with the same SeriesInstanceUID, else the kind is "unknown".
A series is a measurement when its sizes were measured (`report.files.has_measured_sizes`):
validation errors (dciodvfy errors inherited from the source, say) do not change its sizes and
are reported as notes, and a series without sizes (a failed recode) is left out with a note.
For each group the kept fraction (bytes after / bytes before) is averaged over series, with a
95 % confidence interval from the spread across series (Student's t; none from a single
series). Each archive series takes its group's fraction, else the fraction pooled over all
measurements (and says so).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsitranscode.errors import UsageError

TB = 1e12
POOLED = "all measurements"
UNKNOWN = "unknown"


def kind_key(transfer_syntaxes: Iterable[str], photometrics: Iterable[str]) -> str:
    """'syntax+syntax | photometric+photometric', order-free; "unknown" for what is missing."""
    syntaxes = sorted({s.strip() for s in transfer_syntaxes if s and s.strip()})
    photometric = sorted({p.strip() for p in photometrics if p and p.strip()})
    if not syntaxes and not photometric:
        return UNKNOWN
    return f"{'+'.join(syntaxes) or UNKNOWN} | {'+'.join(photometric) or UNKNOWN}"


@dataclass
class KeptFraction:
    """bytes after / bytes before for one kind of source: mean and 95 % interval over series."""

    kind: str
    n: int
    mean: float
    low: float
    high: float
    labels: list[str] = field(default_factory=list)


@dataclass
class ArchiveSeries:
    name: str
    kind: str
    bytes: int


@dataclass
class Projection:
    archive: str
    series: int
    tb_before: float
    tb_after: float
    tb_after_low: float
    tb_after_high: float
    tb_saved: float
    price_per_tb_month: float
    cost_per_year_before: float
    cost_per_year_after: float
    saved_per_year: float
    fractions: list[KeptFraction]
    by_kind: list[dict[str, Any]]
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Measured:
    """Kept fractions per kind of source (and POOLED), and one note per problem found."""

    fractions: dict[str, KeptFraction]
    notes: list[str]


def measured_fractions(
    series_rows: Sequence[dict[str, Any]], archive_kinds: Mapping[str, str] | None = None
) -> Measured:
    """Kept fractions from report series entries; `archive_kinds` (series UID -> kind) names
    the source kind of a run record's series whose source files cannot be read."""
    from wsitranscode.report.files import has_measured_sizes

    groups: dict[str, list[tuple[float, str]]] = defaultdict(list)
    notes: list[str] = []
    for row in series_rows:
        if not has_measured_sizes(row):
            notes.append(
                f"{_series_name(row)}: no measured sizes ({_why_unmeasured(row)}): not used"
            )
            continue
        if row.get("errors"):
            notes.append(
                f"{_series_name(row)}: used for its sizes although it has "
                f"{len(row['errors'])} error(s), first: {row['errors'][0]}"
            )
        key = source_kind(row, archive_kinds or {})
        if key == UNKNOWN:
            notes.append(f"{_series_name(row)}: source transfer syntax and photometric unknown")
        sample = (row["bytes_after"] / row["bytes_before"], str(row.get("label") or ""))
        groups[key].append(sample)
        groups[POOLED].append(sample)
    if not groups:
        raise UsageError(
            "no measured series with sizes in the given reports"
            + (f" ({'; '.join(notes)})" if notes else "")
            + "; run `wsitranscode validate` (or recode) first"
        )
    return Measured({key: _fraction(key, samples) for key, samples in groups.items()}, notes)


def source_kind(row: dict[str, Any], archive_kinds: Mapping[str, str]) -> str:
    """The kind of source a measured series came from: as the report names it, else from the
    source files a run record names, else the archive series with its UID, else "unknown"."""
    photometric = str(row.get("source_photometric") or "")
    named = kind_key(row.get("source_transfer_syntaxes") or [], photometric.split("+"))
    if named != UNKNOWN:
        return named
    from_files = kind_from_files(row.get("source_paths") or [])
    if from_files != UNKNOWN:
        return from_files
    return archive_kinds.get(str(row.get("source_series_uid") or ""), UNKNOWN)


def kind_from_files(paths: Sequence[str | Path]) -> str:
    """The kind of the instances at `paths` (headers only); "unknown" unless every one reads."""
    from wsitranscode.dicom.scan import read_instance

    syntaxes, photometrics = [], []
    for path in paths:
        read = read_instance(Path(path)) if Path(path).is_file() else None
        if not isinstance(read, tuple):
            return UNKNOWN
        instance = read[0]
        syntaxes.append(instance.transfer_syntax_uid)
        photometrics.append(instance.photometric)
    return kind_key(syntaxes, photometrics)


def _series_name(row: dict[str, Any]) -> str:
    uid = str(row.get("source_series_uid") or row.get("recoded_series_uid") or "?")
    label = row.get("label")
    return f"series {uid}" + (f" ({label})" if label else "")


def _why_unmeasured(row: dict[str, Any]) -> str:
    status = row.get("status")
    if status:
        return f"status {status}"
    return "no recoded bytes" if not row.get("bytes_after") else "no source bytes"


def _fraction(kind: str, samples: list[tuple[float, str]]) -> KeptFraction:
    from scipy import stats

    values = [v for v, _ in samples]
    n = len(values)
    mean = sum(values) / n
    if n > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    else:
        half = 0.0
    labels = sorted({label for _, label in samples if label})
    return KeptFraction(kind, n, mean, max(mean - half, 0.0), mean + half, labels)


def archive_from_folder(folder: Path) -> list[ArchiveSeries]:
    from wsitranscode.dicom.scan import scan

    if not Path(folder).exists():
        raise UsageError(f"archive {folder} does not exist")
    found = scan(folder)
    return [
        ArchiveSeries(
            s.uid,
            kind_key(s.transfer_syntaxes(), (i.photometric for i in s.instances)),
            s.total_bytes,
        )
        for s in found.series
    ]


def archive_from_idc(collection: str) -> tuple[str, list[ArchiveSeries]]:
    """Slide (SM) series of an IDC collection from idc-index-data's packaged index (offline)."""
    from wsitranscode.idc import resolve_collection

    collection_id = resolve_collection(collection)
    try:
        import idc_index_data
        import pyarrow.parquet as pq
    except ImportError as err:
        raise UsageError("--collection needs idc-index: pip install 'wsitranscode[idc]'") from err
    table = pq.read_table(
        idc_index_data.IDC_INDEX_PARQUET_FILEPATH,
        columns=["SeriesInstanceUID", "series_size_MB", "TransferSyntaxUID",
                 "PhotometricInterpretation"],
        filters=[("collection_id", "=", collection_id), ("Modality", "=", "SM")],
    )  # fmt: skip
    rows = [
        ArchiveSeries(
            str(r["SeriesInstanceUID"]),
            kind_key(
                str(r["TransferSyntaxUID"] or "").split(","),
                str(r["PhotometricInterpretation"] or "").split(","),
            ),
            round(float(r["series_size_MB"] or 0) * 1_000_000),
        )
        for r in table.to_pylist()
    ]
    return f"IDC {collection_id} (idc-index-data {idc_index_data.__version__})", rows


def check_price(price_per_tb_month: float) -> float:
    """A storage price must be a finite number, zero or more."""
    if not math.isfinite(price_per_tb_month) or price_per_tb_month < 0:
        raise UsageError(f"the price per TB and month must be 0 or more, got {price_per_tb_month}")
    return price_per_tb_month


def project(
    archive_name: str,
    archive: Sequence[ArchiveSeries],
    fractions: dict[str, KeptFraction],
    price_per_tb_month: float,
    notes: Sequence[str] = (),
) -> Projection:
    """The archive's size before and after with the measured fractions; `notes` (problems with
    the measurements) come first in the projection's notes."""
    if not archive:
        raise UsageError(f"{archive_name}: no slide series found to project onto")
    check_price(price_per_tb_month)
    totals: dict[str, dict[str, float]] = defaultdict(lambda: Counter())  # type: ignore[arg-type]
    notes = list(notes)
    for series in archive:
        fraction = fractions.get(series.kind) or fractions[POOLED]
        used = series.kind if series.kind in fractions else POOLED
        group = totals[series.kind]
        group["series"] += 1
        group["before"] += series.bytes
        group["after"] += series.bytes * fraction.mean
        group["after_low"] += series.bytes * fraction.low
        group["after_high"] += series.bytes * fraction.high
        group["measured_by"] = used  # type: ignore[assignment]
    for kind, group in totals.items():
        if group["measured_by"] == POOLED:
            notes.append(
                f"{int(group['series'])} series of kind {kind!r} have no measurement of their "
                "own: projected with the fraction pooled over all measurements"
            )
    before = sum(g["before"] for g in totals.values())
    after = sum(g["after"] for g in totals.values())
    low = sum(g["after_low"] for g in totals.values())
    high = sum(g["after_high"] for g in totals.values())
    per_year = 12 * price_per_tb_month
    return Projection(
        archive=archive_name,
        series=len(archive),
        tb_before=before / TB,
        tb_after=after / TB,
        tb_after_low=low / TB,
        tb_after_high=high / TB,
        tb_saved=(before - after) / TB,
        price_per_tb_month=price_per_tb_month,
        cost_per_year_before=before / TB * per_year,
        cost_per_year_after=after / TB * per_year,
        saved_per_year=(before - after) / TB * per_year,
        fractions=sorted(fractions.values(), key=lambda f: f.kind),
        by_kind=[
            {"kind": kind, **{k: v for k, v in g.items()}} for kind, g in sorted(totals.items())
        ],
        notes=notes,
    )
