"""The header of a re-encoded instance, derived from its source header.

What changes and why (PS3.3 C.7.6.1.1.2, C.7.6.1.1.5, C.8.12.4): a new SOP instance in a new
series and pyramid, ImageType/FrameType DERIVED, the lossy compression history kept and extended,
references to the source (Source Image Sequence, Referenced Series Sequence), this tool added as
contributing equipment. What stays: patient, study, frame of reference, container and specimen,
optical paths and ICC profiles, geometry, functional groups, dimension organization.

Nothing about the acquisition is invented: attributes the source lacks stay missing and are
listed as "inherited: ..."; what can be fixed without guessing is fixed and listed as
"repaired: ...". See docs/design.md, "Derived header".
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.valuerep import DSfloat, format_number_as_ds

from wsitranscode.codecs.base import TargetEncoding
from wsitranscode.dicom import syntaxes
from wsitranscode.dicom.writer import RATIO_PLACEHOLDER

VL_WSI_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.77.1.6"
IMPLEMENTATION_CLASS_UID = syntaxes.PROJECT_ROOT + ".0.1"
MANUFACTURER = "wsitranscode"
NON_STANDARD_MARKER = "NON-STANDARD"  # SeriesDescription of private-syntax output

# PS3.16 codes used by the lossy-compression rules of PS3.3 C.7.6.1.1.5.
LOSSY_COMPRESSION = ("113040", "DCM", "Lossy Compression")
UNCOMPRESSED_PREDECESSOR = ("121320", "DCM", "Uncompressed predecessor")
LOSSY_COMPRESSED_PREDECESSOR = ("121330", "DCM", "Lossy compressed predecessor")
MODIFYING_EQUIPMENT = ("109103", "DCM", "Modifying Equipment")

# Syntaxes whose frames are always lossy, with the method term of what made them lossy.
_ALWAYS_LOSSY_METHOD = {
    syntaxes.JPEG_BASELINE: "ISO_10918_1",
    syntaxes.JPEG_EXTENDED: "ISO_10918_1",
    syntaxes.JPEG_LS_NEAR_LOSSLESS: "ISO_14495_1",
    # A JPEG XL container of a losslessly recompressed JPEG: the JPEG made it lossy.
    syntaxes.JPEG_XL_JPEG_RECOMPRESSION: "ISO_10918_1",
}
# Syntaxes that may be lossy or lossless: the header (or the colour transform) decides.
_MAYBE_LOSSY_METHOD = {
    syntaxes.JPEG_2000: "ISO_15444_1",
    syntaxes.HTJ2K: "ISO_15444_15",
    syntaxes.JPEG_XL: "ISO_18181_1",
}

# Type 1 attributes of the VL WSI IOD a source may lack; we never make them up.
_TYPE_1_ATTRIBUTES = (
    "ImageType",
    "AcquisitionDateTime",
    "FrameOfReferenceUID",
    "Manufacturer",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
    "ContainerIdentifier",
    "SpecimenDescriptionSequence",
    "OpticalPathSequence",
    "ImagedVolumeWidth",
    "ImagedVolumeHeight",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
    "TotalPixelMatrixOriginSequence",
    "ImageOrientationSlide",
    "VolumetricProperties",
    "SpecimenLabelInImage",
    "BurnedInAnnotation",
    "FocusMethod",
    "ExtendedDepthOfField",
    "DimensionOrganizationType",
    "SharedFunctionalGroupsSequence",
)

# Type 2 attributes (present, possibly empty) of the VL WSI IOD: an empty value means
# "unknown", so adding one that is missing states nothing new.
_TYPE_2_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesNumber",
    "AcquisitionContextSequence",
    "ContainerTypeCodeSequence",
    "IssuerOfTheContainerIdentifierSequence",
)

# Elements of the source that must not be carried into a re-encoded instance.
_DROPPED_KEYWORDS = (
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "DataSetTrailingPadding",
    # Signatures sign the old bytes; they would be false on the new ones.
    "DigitalSignaturesSequence",
    "MACParametersSequence",
)

_LO_MAX = 64
_ST_MAX = 1024
_SH_MAX = 16


@dataclass(frozen=True)
class DerivedUIDs:
    """The identifiers of the new instance, chosen by the caller (deterministic or random)."""

    series_instance_uid: str
    sop_instance_uid: str
    pyramid_uid: str
    concatenation_uid: str | None = None
    concatenation_source_uid: str | None = None
    series_number: int | None = None


@dataclass
class _LossyHistory:
    source_lossy: bool
    ratios: list[str]
    methods: list[str]


def derive_header(
    source: Dataset,
    target: TargetEncoding,
    uids: DerivedUIDs,
    *,
    source_path: Path | str | None = None,
    now: datetime | None = None,
    software_version: str,
    keep_ancestors: bool = False,
) -> tuple[Dataset, list[str]]:
    """The header of the re-encoded instance (file meta included, no Pixel Data) and the list
    of repairs ("repaired: ...") and inherited problems ("inherited: ...").

    `keep_ancestors` (used by `export`) keeps the source's own Source Image Sequence items after
    the reference to the source, so the output points back to both predecessors.

    The source is not modified. When `target.lossy`, RATIO_PLACEHOLDER stands where the
    compression ratio goes; `EncapsulatedWriter.commit` replaces it.
    """
    if target.lossy and not target.lossy_method:
        raise ValueError(f"lossy target {target.description!r} has no lossy_method")
    now = now or datetime.now().astimezone().replace(microsecond=0)
    notes: list[str] = []
    source_syntax = _source_transfer_syntax(source, notes)
    header = _copy_without_pixel_data(source, source_syntax, notes)
    _note_missing_type_1(source, notes)
    _repair_values(header, notes)
    _add_empty_type_2(header, notes)

    _set_identity(header, uids, notes)
    _set_derived_image_type(header, notes)
    _set_pixel_description(header, target, notes)
    history = _source_lossy_history(source, source_syntax, source_path, notes)
    _set_lossy_compression(header, target, history, notes)
    _set_derivation(header, target, software_version)
    _set_source_references(header, source, history.source_lossy, keep_ancestors)
    _add_contributing_equipment(header, target, software_version, now)
    _set_series_description(header, target)
    header.InstanceCreationDate = now.strftime("%Y%m%d")
    header.InstanceCreationTime = now.strftime("%H%M%S")
    header.file_meta = _file_meta(header, target, software_version)
    return header, notes


# ---------------------------------------------------------------------------------------------
# Copying and checking the source


def _source_transfer_syntax(source: Dataset, notes: list[str]) -> str:
    meta = getattr(source, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not syntax:
        notes.append(
            "inherited: source has no Transfer Syntax UID in its file meta; "
            "treated as Explicit VR Little Endian"
        )
        return syntaxes.EXPLICIT_VR_LITTLE_ENDIAN
    if meta is not None:
        _note_file_meta_mismatches(source, meta, notes)
    return syntax


def _note_file_meta_mismatches(source: Dataset, meta: FileMetaDataset, notes: list[str]) -> None:
    pairs = (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    )
    for meta_keyword, keyword in pairs:
        if (
            meta_keyword in meta
            and keyword in source
            and meta[meta_keyword].value != source[keyword].value
        ):
            notes.append(f"repaired: source {meta_keyword} differed from {keyword}")


def _copy_without_pixel_data(source: Dataset, source_syntax: str, notes: list[str]) -> Dataset:
    header = Dataset()
    for element in source:
        if element.keyword in _DROPPED_KEYWORDS or element.tag.element == 0:
            continue  # group lengths are retired and would be wrong
        if element.keyword == "IconImageSequence" and syntaxes.is_encapsulated(source_syntax):
            # Its pixel data is encoded in the source syntax, which the new file does not use.
            notes.append("repaired: dropped IconImageSequence encoded in the source syntax")
            continue
        header.add(copy.deepcopy(element))
    return header


def _note_missing_type_1(source: Dataset, notes: list[str]) -> None:
    for keyword in _TYPE_1_ATTRIBUTES:
        if keyword not in source or _is_empty(source[keyword]):
            notes.append(f"inherited: source lacks {keyword}")


def _add_empty_type_2(header: Dataset, notes: list[str]) -> None:
    added = [keyword for keyword in _TYPE_2_ATTRIBUTES if keyword not in header]
    for keyword in added:
        setattr(header, keyword, Sequence() if keyword.endswith("Sequence") else None)
    if added:
        notes.append(f"repaired: added empty Type 2 attributes {', '.join(added)}")


def _is_empty(element: DataElement) -> bool:
    return element.value is None or element.value == "" or element.value == []


def _walk(dataset: Dataset, prefix: str = "") -> Iterator[tuple[str, Dataset, DataElement]]:
    for element in dataset:
        name = prefix + (element.keyword or str(element.tag))
        if element.VR == "SQ":
            for index, item in enumerate(element.value or []):
                yield from _walk(item, f"{name}[{index + 1}]/")
        else:
            yield name, dataset, element


def _repair_values(header: Dataset, notes: list[str]) -> None:
    """Fix what pydicom can fix without guessing; report what cannot be fixed."""
    for name, _parent, element in _walk(header):
        if element.VR == "DS" and element.value not in (None, ""):
            if _reformat_long_decimal_strings(element):
                notes.append(f"repaired: {name} had a decimal string longer than 16 characters")
        elif element.VR == "UI" and isinstance(element.value, str) and len(element.value) > 64:
            notes.append(
                f"inherited: {name} is longer than 64 characters (kept: others refer to it)"
            )


def _reformat_long_decimal_strings(element: DataElement) -> bool:
    values = element.value if element.VM > 1 else [element.value]
    changed = False
    fixed = []
    for value in values:
        text = str(value).strip()
        if len(text) > 16:
            try:
                fixed.append(DSfloat(format_number_as_ds(float(text))))
            except ValueError:
                return False  # not a number at all: left as it is
            changed = True
        else:
            fixed.append(value)
    if changed:
        element.value = fixed if element.VM > 1 else fixed[0]
    return changed


# ---------------------------------------------------------------------------------------------
# Identity, image type, pixel description


def _set_identity(header: Dataset, uids: DerivedUIDs, notes: list[str]) -> None:
    if header.get("SOPClassUID", VL_WSI_SOP_CLASS_UID) != VL_WSI_SOP_CLASS_UID:
        notes.append(f"inherited: source SOP Class {header.SOPClassUID} is not VL WSI")
    header.SOPClassUID = header.get("SOPClassUID", VL_WSI_SOP_CLASS_UID)
    header.SOPInstanceUID = uids.sop_instance_uid
    header.SeriesInstanceUID = uids.series_instance_uid
    if "PyramidUID" in header:
        # Labels and overviews are not part of the pyramid and have none (Type 1C).
        header.PyramidUID = uids.pyramid_uid
    if uids.series_number is not None:
        header.SeriesNumber = uids.series_number
    _set_concatenation(header, uids)


def _set_concatenation(header: Dataset, uids: DerivedUIDs) -> None:
    if "ConcatenationUID" not in header and "SOPInstanceUIDOfConcatenationSource" not in header:
        return
    if not uids.concatenation_uid or not uids.concatenation_source_uid:
        raise ValueError(
            "the source is part of a concatenation: DerivedUIDs needs concatenation_uid and "
            "concatenation_source_uid shared by all its instances"
        )
    # ConcatenationFrameOffsetNumber, InConcatenationNumber and InConcatenationTotalNumber are
    # kept: the new concatenation has the same parts in the same order.
    header.ConcatenationUID = uids.concatenation_uid
    header.SOPInstanceUIDOfConcatenationSource = uids.concatenation_source_uid


def _set_derived_image_type(header: Dataset, notes: list[str]) -> None:
    image_type = _as_list(header.get("ImageType"))
    header.ImageType = ["DERIVED", *image_type[1:]] if image_type else ["DERIVED"]
    shared = _first_item(header, "SharedFunctionalGroupsSequence")
    frame_type_found = False
    for group in _functional_groups(header):
        for item in group.get("WholeSlideMicroscopyImageFrameTypeSequence", []):
            frame_type = _as_list(item.get("FrameType"))
            item.FrameType = ["DERIVED", *frame_type[1:]] if frame_type else header.ImageType
            frame_type_found = True
    if not frame_type_found and shared is not None and len(header.ImageType) == 4:
        # Frame Type takes the values of Image Type (PS3.3 C.8.12.6.1): derivable, not invented.
        item = Dataset()
        item.FrameType = list(header.ImageType)
        shared.WholeSlideMicroscopyImageFrameTypeSequence = Sequence([item])
        notes.append(
            "repaired: added WholeSlideMicroscopyImageFrameTypeSequence (FrameType from ImageType)"
        )


def _functional_groups(header: Dataset) -> Iterator[Dataset]:
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        yield from header.get(keyword, [])


def _set_pixel_description(header: Dataset, target: TargetEncoding, notes: list[str]) -> None:
    samples = int(header.get("SamplesPerPixel", 1))
    if samples == 1:
        header.PhotometricInterpretation = "MONOCHROME2"
        if "PlanarConfiguration" in header:
            del header.PlanarConfiguration
            notes.append("repaired: removed PlanarConfiguration, not allowed with one sample")
    else:
        header.PhotometricInterpretation = target.photometric
        header.PlanarConfiguration = 0


# ---------------------------------------------------------------------------------------------
# Lossy compression history (PS3.3 C.7.6.1.1.5)


def _source_lossy_history(
    source: Dataset, source_syntax: str, source_path: Path | str | None, notes: list[str]
) -> _LossyHistory:
    lossy = _source_was_lossy(source, source_syntax, notes)
    ratios = [str(value).strip() for value in _as_list(source.get("LossyImageCompressionRatio"))]
    methods = [str(value).strip() for value in _as_list(source.get("LossyImageCompressionMethod"))]
    history = _LossyHistory(lossy, ratios, methods)
    if lossy:
        _complete_lossy_history(history, source, source_syntax, source_path, notes)
    return history


def _source_was_lossy(source: Dataset, source_syntax: str, notes: list[str]) -> bool:
    declared = str(source.get("LossyImageCompression", "")).strip()
    if declared not in ("", "00", "01"):
        notes.append(f"repaired: source LossyImageCompression {declared!r} is not 00 or 01")
        declared = ""
    if declared == "01":
        return True
    if source_syntax in _ALWAYS_LOSSY_METHOD:
        state = "says 00" if declared == "00" else "lacks LossyImageCompression"
        notes.append(
            f"repaired: source {state} but its frames are {syntaxes.name_of(source_syntax)}, "
            "which is lossy: set 01"
        )
        return True
    if declared == "00":
        return False
    if source_syntax in _MAYBE_LOSSY_METHOD:
        reversible = str(source.get("PhotometricInterpretation", "")) == "YBR_RCT"
        verdict = "lossless (YBR_RCT)" if reversible else "lossy"
        notes.append(
            f"repaired: source lacks LossyImageCompression; its "
            f"{syntaxes.name_of(source_syntax)} frames taken as {verdict}"
        )
        return not reversible
    notes.append(
        "repaired: source lacks LossyImageCompression; its transfer syntax is lossless: set 00"
    )
    return False


def _complete_lossy_history(
    history: _LossyHistory,
    source: Dataset,
    source_syntax: str,
    source_path: Path | str | None,
    notes: list[str],
) -> None:
    method = _ALWAYS_LOSSY_METHOD.get(source_syntax) or _MAYBE_LOSSY_METHOD.get(source_syntax)
    ratios, methods = history.ratios, history.methods
    if len(ratios) == len(methods) + 1 and method:
        methods.append(method)
        notes.append(f"repaired: source lacks its LossyImageCompressionMethod: added {method}")
    elif len(methods) == len(ratios) + 1:
        estimate = _estimate_source_ratio(source, source_syntax, source_path)
        if estimate:
            ratios.append(estimate)
            notes.append(
                f"repaired: source lacks its LossyImageCompressionRatio: "
                f"estimated {estimate} from its file size"
            )
    elif not ratios and not methods:
        estimate = _estimate_source_ratio(source, source_syntax, source_path)
        if estimate and method:
            ratios.append(estimate)
            methods.append(method)
            notes.append(
                f"repaired: source is lossy but records no ratio or method: added {method} "
                f"and a ratio of {estimate} estimated from its file size"
            )
    if not ratios or len(ratios) != len(methods):
        notes.append(
            f"inherited: source lossy compression history is incomplete "
            f"({len(ratios)} ratios, {len(methods)} methods)"
        )


def _estimate_source_ratio(
    source: Dataset, source_syntax: str, source_path: Path | str | None
) -> str | None:
    """Uncompressed size over file size: a slight underestimate, since the file holds more
    than frames. Only meaningful when the source frames are themselves the lossy ones."""
    if source_path is None or not syntaxes.is_encapsulated(source_syntax):
        return None
    try:
        file_size = os.path.getsize(source_path)
        uncompressed = (
            int(source.Rows)
            * int(source.Columns)
            * int(source.get("SamplesPerPixel", 1))
            * ((int(source.get("BitsAllocated", 8)) + 7) // 8)
            * int(source.get("NumberOfFrames", 1))
        )
    except (OSError, AttributeError, TypeError, ValueError):
        return None
    if file_size <= 0 or uncompressed <= 0:
        return None
    return format_number_as_ds(round(uncompressed / file_size, 2))


def _set_lossy_compression(
    header: Dataset, target: TargetEncoding, history: _LossyHistory, notes: list[str]
) -> None:
    # Never reset to 00 once an ancestor was lossy (PS3.3 C.7.6.1.1.5).
    header.LossyImageCompression = "01" if history.source_lossy or target.lossy else "00"
    ratios = list(history.ratios)
    methods = list(history.methods)
    if target.lossy:
        ratios.append(RATIO_PLACEHOLDER)
        methods.append(str(target.lossy_method))
    if header.LossyImageCompression == "00":
        # A lossless chain has no lossy history to record.
        for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
            if keyword in header:
                del header[keyword]
                notes.append(f"repaired: removed {keyword} from an image never lossy-compressed")
        return
    _set_or_delete(header, "LossyImageCompressionRatio", ratios)
    _set_or_delete(header, "LossyImageCompressionMethod", methods)


def _set_or_delete(header: Dataset, keyword: str, values: list[str]) -> None:
    if values:
        setattr(header, keyword, values)
    elif keyword in header:
        del header[keyword]


# ---------------------------------------------------------------------------------------------
# Derivation and references


def _set_derivation(header: Dataset, target: TargetEncoding, software_version: str) -> None:
    if target.lossy:
        ours = (
            f"Lossy re-encoding by wsitranscode {software_version}: {target.description}; "
            f"compression ratio {RATIO_PLACEHOLDER}"
        )
    else:
        ours = f"Lossless re-encoding by wsitranscode {software_version}: {target.description}"
    previous = str(header.get("DerivationDescription", "")).strip()
    header.DerivationDescription = _join_limited(previous, ours, "; ", _ST_MAX)
    if target.lossy:
        codes = list(header.get("DerivationCodeSequence", []))
        if not any(_code_tuple(item) == LOSSY_COMPRESSION for item in codes):
            codes.append(_code_item(LOSSY_COMPRESSION))
        header.DerivationCodeSequence = Sequence(codes)
    # A lossless step has no code in CID 7203 (Image Derivation): the source's codes, which
    # describe how its pixels came about, stay true and are kept.


def _set_source_references(
    header: Dataset, source: Dataset, source_lossy: bool, keep_ancestors: bool = False
) -> None:
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.get("SOPClassUID", VL_WSI_SOP_CLASS_UID)
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = LOSSY_COMPRESSED_PREDECESSOR if source_lossy else UNCOMPRESSED_PREDECESSOR
    reference.PurposeOfReferenceCodeSequence = Sequence([_code_item(purpose)])
    ancestors = list(source.get("SourceImageSequence", [])) if keep_ancestors else []
    header.SourceImageSequence = Sequence([reference, *ancestors])
    _add_referenced_series(header, source)


def _add_referenced_series(header: Dataset, source: Dataset) -> None:
    """Common Instance Reference module: list the source instance under its series."""
    instance = Dataset()
    instance.ReferencedSOPClassUID = source.get("SOPClassUID", VL_WSI_SOP_CLASS_UID)
    instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series_items = list(header.get("ReferencedSeriesSequence", []))
    source_series = source.get("SeriesInstanceUID")
    for item in series_items:
        if item.get("SeriesInstanceUID") == source_series:
            instances = list(item.get("ReferencedInstanceSequence", []))
            if not any(
                i.get("ReferencedSOPInstanceUID") == source.SOPInstanceUID for i in instances
            ):
                instances.append(instance)
            item.ReferencedInstanceSequence = Sequence(instances)
            break
    else:
        item = Dataset()
        item.SeriesInstanceUID = source_series
        item.ReferencedInstanceSequence = Sequence([instance])
        series_items.append(item)
    header.ReferencedSeriesSequence = Sequence(series_items)


def _add_contributing_equipment(
    header: Dataset, target: TargetEncoding, software_version: str, now: datetime
) -> None:
    item = Dataset()
    item.Manufacturer = MANUFACTURER
    item.SoftwareVersions = software_version
    item.PurposeOfReferenceCodeSequence = Sequence([_code_item(MODIFYING_EQUIPMENT)])
    item.ContributionDateTime = _dicom_datetime(now)
    item.ContributionDescription = f"Re-encoded frames: {target.description}"[:_ST_MAX]
    equipment = list(header.get("ContributingEquipmentSequence", []))
    equipment.append(item)
    header.ContributingEquipmentSequence = Sequence(equipment)


_SERIES_LABEL_MAX = 38  # of LO's 64: room is left for the source's own description


def _set_series_description(header: Dataset, target: TargetEncoding) -> None:
    """The source's description, then ours in brackets (`series_label` where the description is
    long), then the non-standard marker for a private syntax. A label too long even so is cut,
    at a word where one is near, and ends with an ellipsis."""
    label = target.series_label or target.description
    if len(label) > _SERIES_LABEL_MAX:
        cut = label[: _SERIES_LABEL_MAX - 1]
        if " " in cut[_SERIES_LABEL_MAX // 2 :]:  # end at a word where one is near
            cut = cut.rsplit(" ", 1)[0]
        label = cut + "…"
    suffix = f"[{label}]" + (f" {NON_STANDARD_MARKER}" if target.private else "")
    previous = str(header.get("SeriesDescription", "")).strip()
    if not target.private:  # a private predecessor's marker no longer applies (export)
        previous = (
            previous.removesuffix(NON_STANDARD_MARKER)
            .replace(f"] {NON_STANDARD_MARKER} [", "] [")
            .strip()
        )
    header.SeriesDescription = _join_limited(previous, suffix, " ", _LO_MAX)


def _file_meta(header: Dataset, target: TargetEncoding, software_version: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = header.SOPClassUID
    meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
    meta.TransferSyntaxUID = target.transfer_syntax_uid
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    version = "".join(ch for ch in software_version if ch.isalnum())
    meta.ImplementationVersionName = ("WSITRANSCODE" + version)[:_SH_MAX]
    return meta


# ---------------------------------------------------------------------------------------------
# Small helpers


def _as_list(value: object) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)  # type: ignore[call-overload]


def _first_item(header: Dataset, keyword: str) -> Dataset | None:
    sequence = header.get(keyword)
    return sequence[0] if sequence else None


def _code_item(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _code_tuple(item: Dataset) -> tuple[str, str, str]:
    return (
        str(item.get("CodeValue", "")),
        str(item.get("CodingSchemeDesignator", "")),
        str(item.get("CodeMeaning", "")),
    )


def _join_limited(previous: str, ours: str, separator: str, limit: int) -> str:
    """`previous + separator + ours`, shortening `previous` (never ours) to fit `limit`."""
    if not previous:
        return ours[:limit]
    room = limit - len(ours) - len(separator)
    if room <= 0:
        return ours[:limit]
    if len(previous) > room:
        previous = previous[: max(room - 3, 0)].rstrip() + "..."
    return previous + separator + ours


def _dicom_datetime(moment: datetime) -> str:
    text = moment.strftime("%Y%m%d%H%M%S")
    return text + moment.strftime("%z") if moment.tzinfo is not None else text
