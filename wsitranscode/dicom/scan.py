"""Walking a folder: which files are VL Whole Slide Microscopy instances, grouped into series.

`scan(path)` reads headers only: the file meta, then the dataset up to (not including) the
functional group sequences, so even files with tens of thousands of frames are read in about a
millisecond. Decisions, so that results are predictable:

- A file is DICOM only when it has the Part 10 preamble: "DICM" at byte 128. Files without it
  (raw datasets, ACR-NEMA) are skipped as "not DICOM"; every VL WSI producer writes Part 10 files.
- Files are visited in sorted order, names with or without ".dcm". Symbolic links (files and
  folders) are skipped unless `follow_symlinks=True`.
- Every skipped file is a `SkippedFile` whose reason starts with a category followed by ":"
  ("not DICOM", "DICOMDIR", "not VL WSI", "unreadable", "symbolic link", "duplicate").
- A file whose header cannot be read is a problem of its series when its SeriesInstanceUID can
  still be read (so that series fails instead of silently losing a level), else a `SkippedFile`.
- Truncated Pixel Data is found cheaply: native data must end exactly at the end of the file with
  its element header where expected, encapsulated data must end with the sequence delimiter;
  when that quick check fails the file is opened with `FrameReader`, which decides.
  A truncated file is a problem of its series.
- Two files with the same SOPInstanceUID: identical bytes -> the second is skipped as a duplicate;
  different bytes -> a problem in the series.
"""

from __future__ import annotations

import filecmp
import os
import struct
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.filereader import read_partial
from pydicom.uid import UID

from wsitranscode.errors import InvalidInputError, WsiTranscodeError
from wsitranscode.layout import OWN_FILES, STAGING_PREFIX

VL_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
MEDIA_STORAGE_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
FLAVORS = ("VOLUME", "LABEL", "OVERVIEW", "THUMBNAIL")

# The dataset is read up to SharedFunctionalGroupsSequence (5200,9229): everything scan needs
# comes before it, and the per-frame functional groups can be megabytes.
_STOP_TAG = 0x52009229
_SERIES_UID_TAG = 0x0020000E
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_DEFLATED = "1.2.840.10008.1.2.1.99"

REQUIRED_ATTRIBUTES = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "ImageType",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "NumberOfFrames",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
)
# A 75 mm slide at 0.1 um per pixel is 750,000 pixels long: more than this is damage, and readers
# that size a mask or thumbnail by the total pixel matrix would allocate without bound.
MAX_TOTAL_PIXEL_MATRIX_SIDE = 1 << 20
_POSITIVE_INTEGERS = {
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "NumberOfFrames",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
}


@dataclass(frozen=True)
class SkippedFile:
    """A file scan did not use. `reason` is "<category>: <detail>" (see the module docstring)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Instance:
    """One VL WSI file, from its header. Missing integers are 0 and missing strings "" (the series
    then has a problem naming the attribute).

    Attributes:
        path: the file.
        sop_instance_uid, sop_class_uid, series_uid, study_uid, patient_id: identity.
        flavor: ImageType value 3 upper-cased: VOLUME, LABEL, OVERVIEW, THUMBNAIL (or whatever the
            producer wrote; "" when absent).
        image_type: all ImageType values.
        transfer_syntax_uid: from the file meta.
        rows, columns: tile (frame) size in pixels.
        total_rows, total_columns: TotalPixelMatrixRows/Columns (the level's size).
        number_of_frames: frames in this file.
        samples_per_pixel, photometric, bits_allocated, bits_stored: pixel description.
        dimension_organization: DimensionOrganizationType (TILED_FULL, TILED_SPARSE or "").
        concatenation_uid, concatenation_frame_offset, in_concatenation_number,
        in_concatenation_total: concatenation attributes ("" / 0 when not a concatenation part).
        file_size: bytes on disk.
        pyramid_uid: PyramidUID ("" when absent).
        container_id: ContainerIdentifier (the slide).
        frame_of_reference_uid: FrameOfReferenceUID.
        focal_planes, optical_paths: TotalPixelMatrixFocalPlanes and NumberOfOpticalPaths (1 when
            absent).
        lossy_image_compression: LossyImageCompression ("00", "01" or "").
    """

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    patient_id: str
    flavor: str
    image_type: tuple[str, ...]
    transfer_syntax_uid: str
    rows: int
    columns: int
    total_rows: int
    total_columns: int
    number_of_frames: int
    samples_per_pixel: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    dimension_organization: str
    concatenation_uid: str
    concatenation_frame_offset: int
    in_concatenation_number: int
    in_concatenation_total: int
    file_size: int
    pyramid_uid: str
    container_id: str
    frame_of_reference_uid: str
    focal_planes: int = 1
    optical_paths: int = 1
    lossy_image_compression: str = ""

    @property
    def stored_pixels(self) -> int:
        """Pixels held in this file's frames: frames × rows × columns (edge padding included)."""
        return self.number_of_frames * self.rows * self.columns


@dataclass
class Level:
    """One pyramid level: the VOLUME instances with the same total pixel matrix size.

    `instances` holds concatenation parts (in InConcatenationNumber order) and any instances for
    other focal planes or optical paths at this size.
    """

    total_columns: int
    total_rows: int
    instances: list[Instance]

    @property
    def number_of_frames(self) -> int:
        return sum(i.number_of_frames for i in self.instances)

    @property
    def file_size(self) -> int:
        return sum(i.file_size for i in self.instances)


@dataclass
class Series:
    """The instances of one SeriesInstanceUID (one slide's pyramid, label, overview, ...).

    Attributes:
        uid: SeriesInstanceUID.
        study_uid, patient_id: from the first instance (conflicts are listed in `problems`).
        instances: VOLUME largest first, then LABEL, OVERVIEW, THUMBNAIL, others; concatenation
            parts in order.
        problems: one line each, naming the file: conflicts, missing attributes, truncated or
            unreadable files. A series with problems must not be recoded.
    """

    uid: str
    study_uid: str = ""
    patient_id: str = ""
    instances: list[Instance] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(i.file_size for i in self.instances)

    def levels(self) -> list[Level]:
        """VOLUME instances grouped by total pixel matrix size, largest (by columns) first."""
        by_size: dict[tuple[int, int], list[Instance]] = defaultdict(list)
        for instance in self.instances:
            if instance.flavor == "VOLUME":
                by_size[(instance.total_columns, instance.total_rows)].append(instance)
        return [
            Level(columns, rows, sorted(by_size[(columns, rows)], key=_concatenation_order))
            for columns, rows in sorted(by_size, key=lambda size: (-size[0], -size[1]))
        ]

    def transfer_syntaxes(self) -> list[str]:
        return sorted({i.transfer_syntax_uid for i in self.instances})

    def bits_per_pixel(self) -> float | None:
        """8 × bytes of the VOLUME files ÷ pixels stored in their frames (frames × rows × columns).

        Headers and edge-tile padding are included; LABEL, OVERVIEW and THUMBNAIL are not. None
        when the series has no VOLUME pixels.
        """
        volume = [i for i in self.instances if i.flavor == "VOLUME"]
        pixels = sum(i.stored_pixels for i in volume)
        if not pixels:
            return None
        return 8 * sum(i.file_size for i in volume) / pixels


@dataclass
class ScanResult:
    """What `scan` found: the series (sorted by their first file's path) and the skipped files."""

    series: list[Series] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


@dataclass(frozen=True)
class _Unreadable:
    """A VL WSI file whose header failed to parse but whose series is known."""

    path: Path
    series_uid: str
    message: str


def scan(path: Path | str, *, follow_symlinks: bool = False) -> ScanResult:
    """Find the VL WSI series under `path` (a folder, searched recursively, or one file)."""
    root = Path(path)
    if not root.exists():
        raise InvalidInputError("does not exist", path=root)
    result = ScanResult()
    series: dict[str, Series] = {}
    first_file: dict[str, str] = {}  # SOPInstanceUID -> path of its first file
    for file_path, skip_reason in _walk(root, follow_symlinks):
        if skip_reason is not None:
            result.skipped.append(SkippedFile(file_path, skip_reason))
            continue
        found = read_instance(file_path)
        if isinstance(found, SkippedFile):
            result.skipped.append(found)
        elif isinstance(found, _Unreadable):
            target = series.setdefault(found.series_uid, Series(found.series_uid))
            target.problems.append(f"{found.path}: {found.message}")
        else:
            instance, problems = found
            duplicate = _check_duplicate(instance, first_file, series)
            if isinstance(duplicate, SkippedFile):
                result.skipped.append(duplicate)
                continue
            target = series.setdefault(instance.series_uid, Series(instance.series_uid))
            target.instances.append(instance)
            target.problems.extend(problems)
            if duplicate:
                target.problems.append(duplicate)
    for item in series.values():
        _finish_series(item)
    result.series = sorted(series.values(), key=_series_order)
    return result


def read_instance(path: Path) -> tuple[Instance, list[str]] | SkippedFile | _Unreadable:
    """Read one file's header: the instance and its problems, or why it was skipped."""
    try:
        with open(path, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's complaints about odd values; we check
            try:
                return _read_instance(path, handle)
            except OSError:
                raise
            except Exception as exc:  # pydicom converts values lazily: damage shows on access
                return _unreadable(path, handle, exc)
    except OSError as exc:
        return SkippedFile(path, f"unreadable: {exc.strerror or exc}")


# ---------------------------------------------------------------------- walking


def _walk(root: Path, follow_symlinks: bool) -> Iterator[tuple[Path, str | None]]:
    """Every file under root in sorted order, with a skip reason for links not followed."""
    if not root.is_dir():
        yield root, None
        return
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop when following links
            dirnames[:] = []
            continue
        seen.add(real)
        here = Path(dirpath)
        dirnames.sort()
        for name in [d for d in dirnames if d.startswith(STAGING_PREFIX)]:
            yield here / name, "staging folder of an unfinished wsitranscode run: not read"
            dirnames.remove(name)
        if not follow_symlinks:
            for name in [d for d in dirnames if (here / d).is_symlink()]:
                yield here / name, "symbolic link: folder not followed (use follow_symlinks)"
                dirnames.remove(name)
        for name in sorted(filenames):
            file_path = here / name
            if name in OWN_FILES:  # a recode output read as input: its record and lock
                continue
            if file_path.is_symlink() and not follow_symlinks:
                yield file_path, "symbolic link: not followed (use follow_symlinks)"
            elif file_path.is_file():
                yield file_path, None
            else:
                yield file_path, "unreadable: not a regular file"


# ---------------------------------------------------------------------- one file


def _read_instance(
    path: Path, handle: Any
) -> tuple[Instance, list[str]] | SkippedFile | _Unreadable:
    if handle.read(132)[128:132] != b"DICM":
        return SkippedFile(path, "not DICOM: no 'DICM' marker at byte 128")
    handle.seek(0)
    try:
        meta = read_partial(handle, stop_when=lambda tag, vr, length: True).file_meta
    except Exception as exc:  # pydicom raises many types on damaged files
        return SkippedFile(path, f"unreadable: file meta ({_short(exc)})")
    if not meta.get("TransferSyntaxUID"):
        return SkippedFile(path, "unreadable: incomplete file meta (no TransferSyntaxUID)")
    media_class = str(meta.get("MediaStorageSOPClassUID", ""))
    if media_class == MEDIA_STORAGE_DIRECTORY_SOP_CLASS or path.name.upper() == "DICOMDIR":
        return SkippedFile(path, "DICOMDIR: a media directory, not an image")
    if media_class and media_class != VL_WSI_SOP_CLASS:
        return SkippedFile(path, f"not VL WSI: {_sop_class_name(media_class)}")
    handle.seek(0)
    try:
        ds = read_partial(handle, stop_when=_at_functional_groups_or_pixels)
    except Exception as exc:
        return _unreadable(path, handle, exc)
    file_size = os.fstat(handle.fileno()).st_size
    sop_class = str(ds.get("SOPClassUID", media_class))
    if not sop_class:
        return SkippedFile(path, "unreadable: no SOPClassUID")
    if sop_class != VL_WSI_SOP_CLASS:
        return SkippedFile(path, f"not VL WSI: {_sop_class_name(sop_class)}")
    series_uid = _text(ds, "SeriesInstanceUID")
    if not series_uid:
        return SkippedFile(path, "unreadable: no SeriesInstanceUID")
    deflated = str(meta.get("TransferSyntaxUID")) == _DEFLATED  # pydicom inflates in memory
    if handle.tell() >= file_size and not deflated:  # the end came before Pixel Data
        return _Unreadable(
            path, series_uid, f"truncated: the header ends at byte {file_size}, no Pixel Data"
        )
    instance = _instance_from_header(path, ds, file_size)
    problems = _header_problems(path, ds, instance)
    if not problems:
        truncation = _pixel_data_problem(path, handle, instance)
        if truncation:
            problems.append(f"{path}: {truncation}")
    return instance, problems


def _header_problems(path: Path, ds: Dataset, instance: Instance) -> list[str]:
    problems = []
    for keyword in REQUIRED_ATTRIBUTES:
        if _absent(ds, keyword):
            problems.append(f"{path}: missing {keyword}")
        elif keyword in _POSITIVE_INTEGERS and _int(ds, keyword) <= 0:
            problems.append(f"{path}: invalid {keyword} {_clipped(ds.get(keyword))}")
    if instance.image_type and not instance.flavor:
        problems.append(f"{path}: ImageType has no value 3 (VOLUME, LABEL, ...)")
    if not problems:
        problems += _geometry_problems(path, instance)
    return problems


def _geometry_problems(path: Path, instance: Instance) -> list[str]:
    """A total pixel matrix no slide has, or TILED_FULL frames that cannot cover it."""
    for keyword, value in (
        ("TotalPixelMatrixColumns", instance.total_columns),
        ("TotalPixelMatrixRows", instance.total_rows),
    ):
        if value > MAX_TOTAL_PIXEL_MATRIX_SIDE:
            return [
                f"{path}: {keyword} {value} is larger than any slide "
                f"(limit {MAX_TOTAL_PIXEL_MATRIX_SIDE:,} pixels)"
            ]
    if instance.dimension_organization != "TILED_FULL" or instance.concatenation_uid:
        return []
    tiles = -(-instance.total_columns // instance.columns) * -(
        -instance.total_rows // instance.rows
    )
    needed = tiles * instance.focal_planes * instance.optical_paths
    if instance.number_of_frames < needed:
        return [
            f"{path}: TILED_FULL with {instance.number_of_frames} frames cannot cover the "
            f"{instance.total_columns}x{instance.total_rows} TotalPixelMatrixColumns x Rows "
            f"({needed} tiles of {instance.columns}x{instance.rows})"
        ]
    return []


def _at_functional_groups_or_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag >= _STOP_TAG


def _unreadable(path: Path, handle: Any, exc: Exception) -> SkippedFile | _Unreadable:
    """The header failed to parse: try to recover the series from the start of the dataset."""
    message = f"unreadable header ({_short(exc)})"
    handle.seek(0)
    try:
        ds = read_partial(handle, stop_when=lambda tag, vr, length: tag > _SERIES_UID_TAG)
        series_uid = _text(ds, "SeriesInstanceUID")
    except Exception:
        series_uid = ""
    if series_uid and UID(series_uid).is_valid:
        return _Unreadable(path, series_uid, message)
    return SkippedFile(path, f"unreadable: {message}")


def _instance_from_header(path: Path, ds: Dataset, file_size: int) -> Instance:
    image_type = tuple(str(v).strip().upper() for v in _values(ds.get("ImageType")))
    return Instance(
        path=path,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        patient_id=_text(ds, "PatientID"),
        flavor=image_type[2] if len(image_type) > 2 else "",
        image_type=image_type,
        transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID", "")).strip(),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        total_rows=_int(ds, "TotalPixelMatrixRows"),
        total_columns=_int(ds, "TotalPixelMatrixColumns"),
        number_of_frames=_int(ds, "NumberOfFrames"),
        samples_per_pixel=_int(ds, "SamplesPerPixel"),
        photometric=_text(ds, "PhotometricInterpretation"),
        bits_allocated=_int(ds, "BitsAllocated"),
        bits_stored=_int(ds, "BitsStored"),
        dimension_organization=_text(ds, "DimensionOrganizationType").upper(),
        concatenation_uid=_text(ds, "ConcatenationUID"),
        concatenation_frame_offset=_int(ds, "ConcatenationFrameOffsetNumber"),
        in_concatenation_number=_int(ds, "InConcatenationNumber"),
        in_concatenation_total=_int(ds, "InConcatenationTotalNumber"),
        file_size=file_size,
        pyramid_uid=_text(ds, "PyramidUID"),
        container_id=_text(ds, "ContainerIdentifier"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        focal_planes=_int(ds, "TotalPixelMatrixFocalPlanes") or 1,
        optical_paths=_int(ds, "NumberOfOpticalPaths") or 1,
        lossy_image_compression=_text(ds, "LossyImageCompression"),
    )


def _pixel_data_problem(path: Path, handle: Any, instance: Instance) -> str | None:
    """None when the Pixel Data is complete, else a one-line description (quick check first)."""
    if _pixel_data_looks_complete(handle, instance):
        return None
    from wsitranscode.dicom.frames import FrameReader

    try:
        with FrameReader(path):
            return None
    except WsiTranscodeError as err:
        return err.message


def _pixel_data_looks_complete(handle: Any, instance: Instance) -> bool:
    size = instance.file_size
    syntax = instance.transfer_syntax_uid
    if syntax == _DEFLATED:
        return False
    if syntax not in _NATIVE_SYNTAXES:
        return size >= 8 and os.pread(handle.fileno(), 8, size - 8) == _SEQUENCE_DELIMITER
    bytes_per_sample = instance.bits_allocated // 8
    samples = 2 if instance.photometric == "YBR_FULL_422" else instance.samples_per_pixel
    expected = instance.rows * instance.columns * samples * bytes_per_sample
    expected *= instance.number_of_frames
    expected += expected % 2
    header_size = 8 if syntax == "1.2.840.10008.1.2" else 12
    start = size - expected - header_size
    if start < 0:
        return False
    header = os.pread(handle.fileno(), header_size, start)
    tag_ok = header[:4] == b"\xe0\x7f\x10\x00"
    return tag_ok and struct.unpack("<I", header[-4:])[0] == expected


# ---------------------------------------------------------------------- series


def _check_duplicate(
    instance: Instance, first_file: dict[str, str], series: dict[str, Series]
) -> SkippedFile | str | None:
    """A SkippedFile for an identical copy, a problem line for a conflicting one, else None."""
    uid = instance.sop_instance_uid
    if not uid:
        return None
    if uid not in first_file:
        first_file[uid] = str(instance.path)
        return None
    other = first_file[uid]
    try:
        same = filecmp.cmp(other, instance.path, shallow=False)
    except OSError:
        same = False
    if same:
        return SkippedFile(instance.path, f"duplicate: same bytes as {other}")
    return f"{instance.path}: SOPInstanceUID {uid} is also in {other}, with different content"


def _finish_series(series: Series) -> None:
    series.instances.sort(key=_instance_order)
    if series.instances:
        series.study_uid = series.instances[0].study_uid
        series.patient_id = series.instances[0].patient_id
    for attribute, keyword in (
        ("study_uid", "StudyInstanceUID"),
        ("patient_id", "PatientID"),
        ("frame_of_reference_uid", "FrameOfReferenceUID"),
    ):
        conflict = _disagreement(series.instances, attribute, keyword)
        if conflict:
            series.problems.append(conflict)
    series.problems.extend(_concatenation_problems(series.instances))


def _disagreement(instances: list[Instance], attribute: str, keyword: str) -> str | None:
    first_path: dict[str, Path] = {}
    for instance in instances:
        first_path.setdefault(getattr(instance, attribute), instance.path)
    if len(first_path) < 2:
        return None
    values = ", ".join(f"{_clipped(value)} ({path})" for value, path in first_path.items())
    return f"instances disagree on {keyword}: {values}"


def _concatenation_problems(instances: list[Instance]) -> list[str]:
    parts: dict[str, list[Instance]] = defaultdict(list)
    for instance in instances:
        if instance.concatenation_uid:
            parts[instance.concatenation_uid].append(instance)
    problems = []
    for uid, members in parts.items():
        numbers = [m.in_concatenation_number for m in members]
        total = max(m.in_concatenation_total for m in members)
        if len(set(numbers)) != len(numbers):
            problems.append(
                f"concatenation {_clipped_uid(uid)}: part numbers repeat {sorted(numbers)}"
            )
        elif total and sorted(numbers) != list(range(1, total + 1)):
            problems.append(
                f"concatenation {_clipped_uid(uid)}: has parts {sorted(numbers)} of {total} "
                f"({members[0].path})"
            )
    return problems


def _concatenation_order(instance: Instance) -> tuple[str, int, int, str]:
    return (
        instance.concatenation_uid,
        instance.in_concatenation_number,
        instance.concatenation_frame_offset,
        str(instance.path),
    )


def _instance_order(instance: Instance) -> tuple[int, int, int, tuple[str, int, int, str]]:
    rank = FLAVORS.index(instance.flavor) if instance.flavor in FLAVORS else len(FLAVORS)
    return (rank, -instance.total_columns, -instance.total_rows, _concatenation_order(instance))


def _series_order(series: Series) -> tuple[str, str]:
    paths = [str(i.path) for i in series.instances]
    paths += [p.split(": ", 1)[0] for p in series.problems]
    return (min(paths) if paths else "", series.uid)


# ---------------------------------------------------------------------- attribute access


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes | int | float):
        return [value]
    return list(value)


def _absent(ds: Dataset, keyword: str) -> bool:
    return keyword not in ds or ds.get(keyword) in (None, "")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


def _clipped(value: Any, limit: int = 80) -> str:
    """repr of a header value for a message: a damaged length can make it megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _clipped_uid(uid: str) -> str:
    """A UID as it is, or clipped when a damaged length made it something else."""
    return uid if len(uid) <= 64 and uid.isprintable() else _clipped(uid)


def _sop_class_name(uid: str) -> str:
    if len(uid) > 64 or not uid.isprintable():  # a damaged length: not a UID at all
        return _clipped(uid)
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
