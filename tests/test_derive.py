"""derive_header: what a re-encoded instance says about itself, checked attribute by attribute
and by the DICOM validator on complete files."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from tests.dicom_checks import dciodvfy_errors
from tests.writer_builders import (
    FIXED_NOW,
    JPEG_Q80,
    JPEG_XL_LOSSLESS,
    JPEG_XL_Q90,
    SHARED_DATA,
    WEBP_PRIVATE,
    code,
    frames_of,
    new_uids,
    valid_wsi_source,
    write_derived,
    write_source,
)
from wsitranscode.dicom.derive import (
    IMPLEMENTATION_CLASS_UID,
    NON_STANDARD_MARKER,
    DerivedUIDs,
    derive_header,
)
from wsitranscode.dicom.writer import RATIO_PLACEHOLDER

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
KEPT_AS_IS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "FrameOfReferenceUID",
    "ContainerIdentifier",
    "SpecimenDescriptionSequence",
    "OpticalPathSequence",
    "TotalPixelMatrixOriginSequence",
    "ImageOrientationSlide",
    "TotalPixelMatrixRows",
    "TotalPixelMatrixColumns",
    "DimensionOrganizationSequence",
    "DimensionOrganizationType",
    "AcquisitionDateTime",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "NumberOfFrames",
    "SpecificCharacterSet",
    "InstanceNumber",
)


def derive(source: Dataset, target=JPEG_Q80, uids: DerivedUIDs | None = None, **kwargs):
    return derive_header(
        source, target, uids or new_uids(), now=FIXED_NOW, software_version="0.1.0", **kwargs
    )


def codes(sequence) -> list[tuple[str, str, str]]:
    return [(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning) for i in sequence]


def lossy_jpeg_source(**attributes) -> Dataset:
    """The valid source recast as a lossy JPEG baseline instance (header only)."""
    source = valid_wsi_source()
    del source.PixelData
    source.file_meta.TransferSyntaxUID = JPEG_BASELINE
    source.PhotometricInterpretation = "YBR_FULL_422"
    source.LossyImageCompression = "01"
    source.LossyImageCompressionRatio = "20.5"
    source.LossyImageCompressionMethod = "ISO_10918_1"
    for keyword, value in attributes.items():
        if value is None:
            delattr(source, keyword)
        else:
            setattr(source, keyword, value)
    return source


# ---------------------------------------------------------------------------------------------
# A lossy step from a lossless source: every attribute


def test_lossy_step_from_uncompressed_source() -> None:
    source = valid_wsi_source()
    original = copy.deepcopy(source)
    uids = new_uids(series_number=900)
    header, notes = derive(source, JPEG_Q80, uids)

    assert source == original and source.file_meta == original.file_meta  # input untouched
    assert notes == []
    assert "PixelData" not in header
    for keyword in KEPT_AS_IS:
        if keyword in source:
            assert header[keyword].value == source[keyword].value, keyword

    # identity
    assert header.SOPInstanceUID == uids.sop_instance_uid
    assert header.SeriesInstanceUID == uids.series_instance_uid
    assert header.PyramidUID == uids.pyramid_uid
    assert header.SeriesNumber == 900
    assert header.SOPClassUID == source.SOPClassUID
    meta = header.file_meta
    assert meta.MediaStorageSOPInstanceUID == uids.sop_instance_uid
    assert meta.MediaStorageSOPClassUID == source.SOPClassUID
    assert meta.TransferSyntaxUID == JPEG_Q80.transfer_syntax_uid
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert IMPLEMENTATION_CLASS_UID.startswith("2.25.") and len(IMPLEMENTATION_CLASS_UID) <= 64
    assert meta.ImplementationVersionName == "WSITRANSCODE010"

    # image type and frame type
    assert list(header.ImageType) == ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    frame_type = header.SharedFunctionalGroupsSequence[0].WholeSlideMicroscopyImageFrameTypeSequence
    assert list(frame_type[0].FrameType) == ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    assert source.SharedFunctionalGroupsSequence[0] == original.SharedFunctionalGroupsSequence[0]

    # pixel description
    assert header.PhotometricInterpretation == "YBR_FULL_422"
    assert header.SamplesPerPixel == 3 and header.PlanarConfiguration == 0

    # lossy compression (PS3.3 C.7.6.1.1.5)
    assert header.LossyImageCompression == "01"
    assert str(header.LossyImageCompressionRatio).strip() == RATIO_PLACEHOLDER
    assert header.LossyImageCompressionMethod == "ISO_10918_1"
    assert "JPEG q80" in header.DerivationDescription
    assert header.DerivationDescription.endswith(RATIO_PLACEHOLDER)
    assert codes(header.DerivationCodeSequence) == [("113040", "DCM", "Lossy Compression")]

    # references
    (reference,) = header.SourceImageSequence
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert codes(reference.PurposeOfReferenceCodeSequence) == [
        ("121320", "DCM", "Uncompressed predecessor")
    ]
    (series,) = header.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID

    # equipment, description, dates
    (equipment,) = header.ContributingEquipmentSequence
    assert equipment.Manufacturer == "wsitranscode"
    assert equipment.SoftwareVersions == "0.1.0"
    assert codes(equipment.PurposeOfReferenceCodeSequence) == [
        ("109103", "DCM", "Modifying Equipment")
    ]
    assert equipment.ContributionDateTime == "20261129123045+0000"
    assert "JPEG q80" in equipment.ContributionDescription
    assert header.SeriesDescription == "H&E scan [JPEG q80]"
    assert header.InstanceCreationDate == "20261129"
    assert header.InstanceCreationTime == "123045"


def test_pyramid_uid_is_only_set_where_the_source_has_one() -> None:
    source = valid_wsi_source()
    del source.PyramidUID
    source.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    header, _ = derive(source)
    assert "PyramidUID" not in header
    assert list(header.ImageType) == ["DERIVED", "PRIMARY", "LABEL", "NONE"]


def test_series_number_is_kept_when_not_given() -> None:
    header, _ = derive(valid_wsi_source())
    assert header.SeriesNumber == 3


# ---------------------------------------------------------------------------------------------
# Lossy history across steps


def test_lossless_step_from_lossless_source_records_no_lossy_history() -> None:
    header, notes = derive(valid_wsi_source(), JPEG_XL_LOSSLESS)
    assert notes == []
    assert header.LossyImageCompression == "00"
    assert "LossyImageCompressionRatio" not in header
    assert "LossyImageCompressionMethod" not in header
    assert "DerivationCodeSequence" not in header
    assert RATIO_PLACEHOLDER not in header.DerivationDescription
    assert header.DerivationDescription.startswith("Lossless re-encoding by wsitranscode")
    assert header.ImageType[0] == "DERIVED"
    assert header.PhotometricInterpretation == "RGB"
    purpose = header.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0]
    assert purpose.CodeValue == "121320"


def test_lossless_step_after_lossy_source_keeps_01_and_appends_nothing() -> None:
    source = lossy_jpeg_source()
    source.DerivationCodeSequence = Sequence([code("113040", "DCM", "Lossy Compression")])
    header, notes = derive(source, JPEG_XL_LOSSLESS)
    assert notes == []
    assert header.LossyImageCompression == "01"
    assert header.LossyImageCompressionRatio == 20.5
    assert header.LossyImageCompressionMethod == "ISO_10918_1"
    assert codes(header.DerivationCodeSequence) == [("113040", "DCM", "Lossy Compression")]
    purpose = header.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodeMeaning) == ("121330", "Lossy compressed predecessor")


def test_lossy_step_after_lossy_source_appends_in_matching_order() -> None:
    header, _ = derive(lossy_jpeg_source(), JPEG_XL_Q90)
    assert header.LossyImageCompression == "01"
    assert [str(v).strip() for v in header.LossyImageCompressionRatio] == [
        "20.5",
        RATIO_PLACEHOLDER,
    ]
    assert list(header.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_18181_1"]
    assert header.PhotometricInterpretation == "RGB"


def test_source_derivation_description_is_kept_before_ours() -> None:
    source = lossy_jpeg_source(DerivationDescription="Scanner JPEG q90")
    header, _ = derive(source, JPEG_XL_Q90)
    assert header.DerivationDescription.startswith("Scanner JPEG q90; Lossy re-encoding")
    assert header.DerivationDescription.endswith(RATIO_PLACEHOLDER)
    source.DerivationDescription = "x" * 1024
    header, _ = derive(source, JPEG_XL_Q90)
    assert len(header.DerivationDescription) <= 1024
    assert header.DerivationDescription.endswith(RATIO_PLACEHOLDER)


def test_jpeg_source_without_ratio_and_method_is_repaired_from_its_file(tmp_path: Path) -> None:
    source = valid_wsi_source()
    frames = frames_of(source)
    source.file_meta.TransferSyntaxUID = JPEG_BASELINE
    source.PhotometricInterpretation = "YBR_FULL_422"
    del source.LossyImageCompression
    import imagecodecs

    source.PixelData = encapsulate([imagecodecs.jpeg8_encode(f, level=70) for f in frames])
    path = write_source(source, tmp_path / "jpeg.dcm")

    header, notes = derive(pydicom.dcmread(path), JPEG_XL_Q90, source_path=path)
    assert any("lacks LossyImageCompression" in n and "set 01" in n for n in notes)
    assert any(n.startswith("repaired: source is lossy but records no ratio") for n in notes)
    ratios = [str(v).strip() for v in header.LossyImageCompressionRatio]
    estimate = float(ratios[0])
    uncompressed = sum(f.nbytes for f in frames)
    assert estimate == pytest.approx(uncompressed / path.stat().st_size, rel=0.01)
    assert ratios[1] == RATIO_PLACEHOLDER
    assert list(header.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_18181_1"]


def test_lossy_source_history_cannot_be_estimated_without_its_file() -> None:
    source = lossy_jpeg_source(LossyImageCompressionRatio=None, LossyImageCompressionMethod=None)
    header, notes = derive(source, JPEG_XL_LOSSLESS)
    assert header.LossyImageCompression == "01"
    assert "LossyImageCompressionRatio" not in header
    assert any(
        n.startswith("inherited: source lossy compression history is incomplete") for n in notes
    )


def test_missing_method_is_taken_from_the_source_syntax() -> None:
    source = lossy_jpeg_source(LossyImageCompressionMethod=None)
    header, notes = derive(source, JPEG_XL_LOSSLESS)
    assert header.LossyImageCompressionMethod == "ISO_10918_1"
    assert any("lacks its LossyImageCompressionMethod" in n for n in notes)


def test_jpeg_source_claiming_00_is_corrected_to_01() -> None:
    source = lossy_jpeg_source(LossyImageCompression="00")
    header, notes = derive(source, JPEG_XL_LOSSLESS)
    assert header.LossyImageCompression == "01"
    assert any("says 00" in n and "set 01" in n for n in notes)


@pytest.mark.parametrize(
    ("photometric", "lossy"), [("YBR_RCT", False), ("YBR_ICT", True), ("RGB", True)]
)
def test_jpeg_2000_source_without_flag_is_judged_by_its_colour_transform(
    photometric: str, lossy: bool
) -> None:
    source = lossy_jpeg_source(
        LossyImageCompression=None,
        LossyImageCompressionRatio=None,
        LossyImageCompressionMethod=None,
        PhotometricInterpretation=photometric,
    )
    source.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.91"
    header, notes = derive(source, JPEG_XL_LOSSLESS)
    assert header.LossyImageCompression == ("01" if lossy else "00")
    assert any("JPEG 2000" in n for n in notes)


def test_lossy_target_without_method_is_a_programming_error() -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="lossy_method"):
        derive(valid_wsi_source(), replace(JPEG_Q80, lossy_method=None))


# ---------------------------------------------------------------------------------------------
# Other attributes


def test_monochrome_stays_monochrome_and_loses_planar_configuration() -> None:
    source = valid_wsi_source(samples=1)
    source.PlanarConfiguration = 0  # invalid for one sample, as in highdicom's grayscale sample
    header, notes = derive(source, JPEG_XL_LOSSLESS)
    assert header.PhotometricInterpretation == "MONOCHROME2"
    assert "PlanarConfiguration" not in header
    assert any("PlanarConfiguration" in n for n in notes)


def test_private_target_is_marked_in_the_series_description() -> None:
    header, _ = derive(valid_wsi_source(), WEBP_PRIVATE)
    assert header.SeriesDescription == f"H&E scan [WebP q80] {NON_STANDARD_MARKER}"
    assert header.file_meta.TransferSyntaxUID == WEBP_PRIVATE.transfer_syntax_uid


def test_series_description_fits_lo_and_keeps_our_part() -> None:
    source = valid_wsi_source()
    source.SeriesDescription = "A" * 64
    for target in (JPEG_Q80, WEBP_PRIVATE):
        header, _ = derive(source, target)
        assert len(header.SeriesDescription) <= 64
        assert header.SeriesDescription.endswith(
            NON_STANDARD_MARKER if target.private else "[JPEG q80]"
        )
    del source.SeriesDescription
    header, _ = derive(source, JPEG_Q80)
    assert header.SeriesDescription == "[JPEG q80]"


def test_existing_references_and_equipment_are_extended_not_replaced() -> None:
    source = valid_wsi_source()
    earlier = Dataset()
    earlier.Manufacturer = "Converter"
    source.ContributingEquipmentSequence = Sequence([earlier])
    other = Dataset()
    other.SeriesInstanceUID = "1.2.3.4"
    other.ReferencedInstanceSequence = Sequence()
    source.ReferencedSeriesSequence = Sequence([other])
    header, _ = derive(source)
    assert [e.Manufacturer for e in header.ContributingEquipmentSequence] == [
        "Converter",
        "wsitranscode",
    ]
    assert [s.SeriesInstanceUID for s in header.ReferencedSeriesSequence] == [
        "1.2.3.4",
        source.SeriesInstanceUID,
    ]


def test_concatenation_uids_are_replaced_and_positions_kept() -> None:
    source = valid_wsi_source()
    source.ConcatenationUID = "1.2.3.100"
    source.SOPInstanceUIDOfConcatenationSource = "1.2.3.101"
    source.ConcatenationFrameOffsetNumber = 6
    source.InConcatenationNumber = 2
    source.InConcatenationTotalNumber = 3
    uids = new_uids(concatenation_uid="1.2.3.200", concatenation_source_uid="1.2.3.201")
    header, _ = derive(source, uids=uids)
    assert header.ConcatenationUID == "1.2.3.200"
    assert header.SOPInstanceUIDOfConcatenationSource == "1.2.3.201"
    assert (header.ConcatenationFrameOffsetNumber, header.InConcatenationNumber) == (6, 2)
    assert header.InConcatenationTotalNumber == 3
    with pytest.raises(ValueError, match="concatenation"):
        derive(source)


def test_missing_acquisition_facts_are_reported_not_invented() -> None:
    source = valid_wsi_source()
    for keyword in ("OpticalPathSequence", "AcquisitionDateTime", "DeviceSerialNumber"):
        delattr(source, keyword)
    del source.SharedFunctionalGroupsSequence[0].WholeSlideMicroscopyImageFrameTypeSequence
    header, notes = derive(source)
    for keyword in ("OpticalPathSequence", "AcquisitionDateTime", "DeviceSerialNumber"):
        assert keyword not in header
        assert f"inherited: source lacks {keyword}" in notes
    frame_type = header.SharedFunctionalGroupsSequence[0].WholeSlideMicroscopyImageFrameTypeSequence
    assert list(frame_type[0].FrameType) == list(header.ImageType)
    assert any("FrameType from ImageType" in n for n in notes)


def test_fixable_value_problems_are_repaired_and_listed() -> None:
    source = valid_wsi_source()
    del source.PatientSex
    measures = source.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    with pytest.warns(UserWarning, match="exceeds the maximum length"):
        measures.SliceThickness = "0.00100000000000001"  # 19 characters: too long for DS
    source.file_meta.MediaStorageSOPInstanceUID = "1.2.3.999"
    header, notes = derive(source)
    repaired = header.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness
    assert len(str(repaired)) <= 16
    assert float(repaired) == pytest.approx(0.001)
    assert measures.SliceThickness == "0.00100000000000001"  # the source is not modified
    assert "PatientSex" in header and header["PatientSex"].is_empty
    assert any("SliceThickness" in n and n.startswith("repaired:") for n in notes)
    assert any("PatientSex" in n and n.startswith("repaired:") for n in notes)
    assert "repaired: source MediaStorageSOPInstanceUID differed from SOPInstanceUID" in notes


def test_pixel_data_padding_and_signatures_are_dropped() -> None:
    source = valid_wsi_source()
    source.DataSetTrailingPadding = b"\0\0"
    source.ExtendedOffsetTable = b"\0" * 8
    header, _ = derive(source)
    for keyword in ("PixelData", "DataSetTrailingPadding", "ExtendedOffsetTable"):
        assert keyword not in header


# ---------------------------------------------------------------------------------------------
# The validator on complete files


@pytest.mark.parametrize("target", [JPEG_Q80, JPEG_XL_Q90, JPEG_XL_LOSSLESS])
def test_valid_source_gives_a_valid_output(tmp_path: Path, target) -> None:
    source = valid_wsi_source()
    source_path = write_source(source, tmp_path / "source.dcm")
    assert dciodvfy_errors(source_path) == []
    out, notes, _ = write_derived(source, frames_of(source), target, tmp_path / "out.dcm")
    assert notes == []
    assert dciodvfy_errors(out) == []


def test_valid_monochrome_source_gives_a_valid_output(tmp_path: Path) -> None:
    source = valid_wsi_source(samples=1)
    assert dciodvfy_errors(write_source(source, tmp_path / "source.dcm")) == []
    out, _, _ = write_derived(source, frames_of(source), JPEG_XL_LOSSLESS, tmp_path / "out.dcm")
    assert dciodvfy_errors(out) == []


def test_second_lossy_generation_is_valid(tmp_path: Path) -> None:
    source = valid_wsi_source()
    frames = frames_of(source)
    first, _, _ = write_derived(source, frames, JPEG_Q80, tmp_path / "first.dcm")
    first_ds = pydicom.dcmread(first)
    second, notes, _ = write_derived(
        first_ds, frames, JPEG_XL_Q90, tmp_path / "second.dcm", source_path=first
    )
    assert notes == []
    assert dciodvfy_errors(second) == []
    ds = pydicom.dcmread(second, stop_before_pixels=True)
    assert list(ds.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_18181_1"]
    assert len(ds.LossyImageCompressionRatio) == 2
    assert [e.Manufacturer for e in ds.ContributingEquipmentSequence] == ["wsitranscode"] * 2
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == first_ds.SOPInstanceUID


# ---------------------------------------------------------------------------------------------
# Real third-party files (skipped when ../shared/data is absent)


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"sample data not available: {path} (see shared/data/PROVENANCE.md)")
    return path


def decoded_frames(ds: Dataset) -> list:
    arrays = ds.pixel_array
    if int(ds.SamplesPerPixel) == 1:
        arrays = arrays[..., None]
    return list(arrays)


@pytest.mark.shared_data
def test_highdicom_sample_gives_a_valid_output(tmp_path: Path) -> None:
    path = shared_file("dicom/highdicom/sm_image.dcm")
    assert dciodvfy_errors(path) == []
    source = pydicom.dcmread(path)
    out, notes, _ = write_derived(source, decoded_frames(source), JPEG_XL_Q90, tmp_path / "o.dcm")
    assert notes == []
    assert dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert ds.OpticalPathSequence == source.OpticalPathSequence
    assert ds.SpecimenDescriptionSequence == source.SpecimenDescriptionSequence


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore:The value length \\(66\\):UserWarning")  # its FoR UID
def test_ez_wsi_sample_gains_no_validator_error(tmp_path: Path) -> None:
    path = shared_file("dicom/ez-wsi/multiframe_camelyon_challenge_image.dcm")
    source = pydicom.dcmread(path)
    out, notes, _ = write_derived(
        source, decoded_frames(source), JPEG_XL_Q90, tmp_path / "o.dcm", source_path=path
    )
    before, after = set(dciodvfy_errors(path)), set(dciodvfy_errors(out))
    assert after <= before, sorted(after - before)
    assert len(after) < len(before)  # empty Type 2 attributes and FrameType were added
    assert "inherited: source lacks OpticalPathSequence" in notes
    assert any(n.startswith("inherited: FrameOfReferenceUID is longer than 64") for n in notes)
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert str(ds.LossyImageCompressionRatio[0]).strip() == "26.107649"
    assert list(ds.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_18181_1"]
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID


@pytest.mark.shared_data
def test_highdicom_grayscale_sample_gains_no_validator_error(tmp_path: Path) -> None:
    path = shared_file("dicom/highdicom/sm_image_grayscale.dcm")
    source = pydicom.dcmread(path)
    lossless = JPEG_XL_LOSSLESS
    out, notes, _ = write_derived(source, decoded_frames(source), lossless, tmp_path / "o.dcm")
    before, after = set(dciodvfy_errors(path)), set(dciodvfy_errors(out))
    assert after <= before, sorted(after - before)
    assert any("PlanarConfiguration" in n for n in notes)


STANDARD_CODEC_SETTINGS = [
    ("jpeg", False),
    ("jxl", False),
    ("jxl", True),
    ("j2k", False),
    ("j2k", True),
    ("htj2k", False),
    ("htj2k", True),
]


@pytest.mark.parametrize(("codec_name", "lossless"), STANDARD_CODEC_SETTINGS)
def test_every_standard_codec_target_gives_a_valid_output(
    tmp_path: Path, codec_name: str, lossless: bool
) -> None:
    """The real codecs' targets (syntax, photometric, method) with the real encoders."""
    from wsitranscode.codecs.base import EncodeSettings, get_codec
    from wsitranscode.dicom.writer import EncapsulatedWriter

    codec = get_codec(codec_name)
    effort = 1 if codec_name == "jxl" else None
    settings = EncodeSettings(quality=80, lossless=lossless, effort=effort)
    target = codec.target(settings)
    source = valid_wsi_source()
    header, notes = derive(source, target)
    assert notes == []
    frames = [codec.encode(frame, settings) for frame in frames_of(source)]
    out = tmp_path / "out.dcm"
    with EncapsulatedWriter(out, header, len(frames)) as writer:
        for data in frames:
            writer.write_frame(data)
        writer.commit(sum(f.nbytes for f in frames_of(source)) / sum(map(len, frames)))
    assert dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert ds.LossyImageCompression == ("00" if lossless else "01")
    assert ds.PhotometricInterpretation == target.photometric


def test_jpeg_xl_recompression_of_a_jpeg_source_is_valid(tmp_path: Path) -> None:
    import imagecodecs

    from wsitranscode.codecs.base import EncodeSettings, get_codec
    from wsitranscode.dicom.writer import EncapsulatedWriter

    source = valid_wsi_source()
    jpeg_frames = [imagecodecs.jpeg8_encode(f, level=85) for f in frames_of(source)]
    source.file_meta.TransferSyntaxUID = JPEG_BASELINE
    source.PhotometricInterpretation = "YBR_FULL_422"
    source.LossyImageCompression = "01"
    source.LossyImageCompressionRatio = "12"
    source.LossyImageCompressionMethod = "ISO_10918_1"
    source.PixelData = encapsulate(jpeg_frames)
    codec = get_codec("jxl-recompress")
    settings = EncodeSettings()
    target = codec.target(settings)
    header, notes = derive(source, target)
    assert notes == []
    out = tmp_path / "out.dcm"
    with EncapsulatedWriter(out, header, len(jpeg_frames)) as writer:
        for data in jpeg_frames:
            writer.write_frame(codec.recompress(data, settings))
        writer.commit(20.0)
    assert dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionRatio == 12  # a lossless step adds no ratio
    assert ds.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121330"


def test_a_long_private_description_keeps_the_sources_words_and_its_own_label() -> None:
    """A neural target's description ('neural he-small weights sha256:...') is longer than LO
    allows beside the source's: its short label is used, and export drops the marker again."""
    from dataclasses import replace

    neural = replace(
        WEBP_PRIVATE,
        description="neural compressai/bmshj2018-factorized/mse/q7 weights sha256:ef0e3668c299",
        series_label="cai ef0e3668",
    )
    source = valid_wsi_source()
    source.SeriesDescription = "Congo Red-Lung test"
    header, _ = derive(source, neural)
    assert header.SeriesDescription == f"Congo Red-Lung test [cai ef0e3668] {NON_STANDARD_MARKER}"
    exported, _ = derive(header, JPEG_Q80)
    assert exported.SeriesDescription == "Congo Red-Lung test [cai ef0e3668] [JPEG q80]"

    unlabelled = replace(neural, series_label=None)
    header, _ = derive(source, unlabelled)
    text = header.SeriesDescription
    assert len(text) <= 64 and text.startswith("Congo") and text.endswith(NON_STANDARD_MARKER)
    assert "[neural compressai/bmshj2018-" in text and "…]" in text, text
