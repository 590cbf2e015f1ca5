"""A complete, validator-clean VL WSI source built with pydicom, and helpers to write derived
instances of it, for the derive and writer tests. Tiles are tiny so every test is fast."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import imagecodecs
import numpy as np
from pydicom import Dataset, FileMetaDataset, dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from wsitranscode.codecs.base import TargetEncoding
from wsitranscode.dicom.derive import DerivedUIDs, derive_header
from wsitranscode.dicom.writer import EncapsulatedWriter

VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXED_NOW = datetime(2026, 11, 29, 12, 30, 45, tzinfo=UTC)

JPEG_Q80 = TargetEncoding(
    codec="jpeg",
    transfer_syntax_uid="1.2.840.10008.1.2.4.50",
    photometric="YBR_FULL_422",
    lossy=True,
    lossy_method="ISO_10918_1",
    description="JPEG q80",
)
JPEG_XL_Q90 = TargetEncoding(
    codec="jxl",
    transfer_syntax_uid="1.2.840.10008.1.2.4.112",
    photometric="RGB",
    lossy=True,
    lossy_method="ISO_18181_1",
    description="JPEG XL q90 effort 3",
)
JPEG_XL_LOSSLESS = TargetEncoding(
    codec="jxl",
    transfer_syntax_uid="1.2.840.10008.1.2.4.110",
    photometric="RGB",
    lossy=False,
    lossy_method=None,
    description="JPEG XL lossless effort 3",
)
WEBP_PRIVATE = TargetEncoding(
    codec="webp",
    transfer_syntax_uid="2.25.39446534520382642101584445488178659938.1.1",
    photometric="RGB",
    lossy=True,
    lossy_method="WEBP",
    description="WebP q80",
    private=True,
)


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def new_uids(**extra: object) -> DerivedUIDs:
    return DerivedUIDs(generate_uid(), generate_uid(), generate_uid(), **extra)  # type: ignore[arg-type]


def tissue_like(total_rows: int, total_columns: int, samples: int, seed: int = 7) -> np.ndarray:
    """Smooth colour gradients with mild noise: compresses like tissue, not like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:total_rows, 0:total_columns]
    base = np.stack(
        [
            180 + 40 * np.sin(x / 7.0),
            120 + 50 * np.cos(y / 5.0),
            170 + 30 * np.sin((x + y) / 9.0),
        ],
        axis=-1,
    )[..., :samples]
    noisy = base + rng.normal(0, 4, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def tiles_of(image: np.ndarray, tile: int) -> list[np.ndarray]:
    """TILED_FULL order: row by row, padded with white at the right and bottom edges."""
    rows, columns = image.shape[:2]
    out = []
    for top in range(0, rows, tile):
        for left in range(0, columns, tile):
            block = np.full((tile, tile, image.shape[2]), 255, dtype=image.dtype)
            part = image[top : top + tile, left : left + tile]
            block[: part.shape[0], : part.shape[1]] = part
            out.append(block)
    return out


def valid_wsi_source(
    *,
    tile: int = 16,
    total_rows: int = 32,
    total_columns: int = 48,
    samples: int = 3,
    pixel_spacing_mm: float = 0.0005,
    series_uid: str | None = None,
    pyramid_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.8.498.10",
    frame_of_reference_uid: str = "1.2.826.0.1.3680043.8.498.11",
    image: np.ndarray | None = None,
) -> Dataset:
    """A VL WSI volume instance, Explicit VR Little Endian, that dciodvfy accepts without error."""
    if image is None:
        image = tissue_like(total_rows, total_columns, samples)
    frames = tiles_of(image, tile)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = VL_WSI
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = VL_WSI
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    _patient_study_series(ds, study_uid, series_uid, pyramid_uid)
    _equipment_and_acquisition(ds)
    _specimen(ds)
    _frame_of_reference_and_geometry(
        ds, frame_of_reference_uid, total_rows, total_columns, pixel_spacing_mm
    )
    _optical_path(ds)
    _pixels(ds, frames, tile, samples)
    return ds


def _patient_study_series(
    ds: Dataset, study_uid: str, series_uid: str | None, pyramid_uid: str | None
) -> None:
    ds.PatientName = "Test^Patient"
    ds.PatientID = "P-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260101"
    ds.StudyTime = "101010"
    ds.StudyID = "S1"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "SM"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = 3
    ds.SeriesDescription = "H&E scan"
    ds.PyramidUID = pyramid_uid or generate_uid()
    ds.InstanceNumber = 1
    ds.ContentDate = "20260101"
    ds.ContentTime = "101010"
    ds.AcquisitionDateTime = "20260101101010"
    ds.AcquisitionDuration = 12.0


def _equipment_and_acquisition(ds: Dataset) -> None:
    ds.Manufacturer = "Scanner Maker"
    ds.ManufacturerModelName = "Model 1"
    ds.DeviceSerialNumber = "SN-1"
    ds.SoftwareVersions = "1.0"
    ds.VolumetricProperties = "VOLUME"
    ds.SpecimenLabelInImage = "NO"
    ds.BurnedInAnnotation = "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.AcquisitionContextSequence = DicomSequence()
    ds.LossyImageCompression = "00"


def _specimen(ds: Dataset) -> None:
    ds.ContainerIdentifier = "SLIDE-1"
    ds.IssuerOfTheContainerIdentifierSequence = DicomSequence()
    ds.ContainerTypeCodeSequence = DicomSequence([code("433466003", "SCT", "Microscope slide")])
    specimen = Dataset()
    specimen.SpecimenIdentifier = "SPEC-1"
    specimen.SpecimenUID = "2.25.1234567890123456789"
    specimen.IssuerOfTheSpecimenIdentifierSequence = DicomSequence()
    specimen.SpecimenPreparationSequence = DicomSequence()
    ds.SpecimenDescriptionSequence = DicomSequence([specimen])


def _frame_of_reference_and_geometry(
    ds: Dataset, uid: str, total_rows: int, total_columns: int, spacing: float
) -> None:
    ds.FrameOfReferenceUID = uid
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.ImagedVolumeWidth = total_columns * spacing
    ds.ImagedVolumeHeight = total_rows * spacing
    ds.ImagedVolumeDepth = 0.001
    ds.TotalPixelMatrixColumns = total_columns
    ds.TotalPixelMatrixRows = total_rows
    ds.TotalPixelMatrixFocalPlanes = 1
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = DicomSequence([origin])
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.DimensionOrganizationType = "TILED_FULL"
    organization = Dataset()
    organization.DimensionOrganizationUID = generate_uid()
    ds.DimensionOrganizationSequence = DicomSequence([organization])
    measures = Dataset()
    measures.PixelSpacing = [spacing, spacing]
    measures.SliceThickness = 0.001
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.WholeSlideMicroscopyImageFrameTypeSequence = DicomSequence([frame_type])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])


def _optical_path(ds: Dataset) -> None:
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    path.IlluminationTypeCodeSequence = DicomSequence(
        [code("111744", "DCM", "Brightfield illumination")]
    )
    path.IlluminationColorCodeSequence = DicomSequence([code("414298005", "SCT", "Full Spectrum")])
    ds.OpticalPathSequence = DicomSequence([path])
    ds.NumberOfOpticalPaths = 1


def _add_icc_profile(ds: Dataset) -> None:
    # Required for colour images (PS3.3 C.8.12.5); Pillow (a wsidicom dependency) makes sRGB.
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    ds.OpticalPathSequence[0].ICCProfile = profile


def _pixels(ds: Dataset, frames: list[np.ndarray], tile: int, samples: int) -> None:
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
        _add_icc_profile(ds)
    else:
        ds.PresentationLUTShape = "IDENTITY"
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
    ds.Rows = tile
    ds.Columns = tile
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = len(frames)
    ds.PixelData = b"".join(frame.tobytes() for frame in frames)


def frames_of(source: Dataset) -> list[np.ndarray]:
    """The decoded frames of a native source, HxWxS."""
    rows, columns, samples = int(source.Rows), int(source.Columns), int(source.SamplesPerPixel)
    frame_bytes = rows * columns * samples
    data = source.PixelData
    return [
        np.frombuffer(data[i : i + frame_bytes], np.uint8).reshape(rows, columns, samples)
        for i in range(0, len(data), frame_bytes)
    ]


def encode_frames(frames: Sequence[np.ndarray], target: TargetEncoding) -> list[bytes]:
    """Encode with imagecodecs directly (the codec modules are tested elsewhere)."""
    syntax = target.transfer_syntax_uid
    if syntax == "1.2.840.10008.1.2.4.50":
        return [imagecodecs.jpeg8_encode(frame, level=80) for frame in frames]
    if syntax == "1.2.840.10008.1.2.4.112":
        return [imagecodecs.jpegxl_encode(frame, level=90, effort=3) for frame in frames]
    if syntax == "1.2.840.10008.1.2.4.110":
        return [imagecodecs.jpegxl_encode(frame, lossless=True, effort=3) for frame in frames]
    if syntax.startswith("2.25."):
        return [imagecodecs.webp_encode(frame, level=80, lossless=False) for frame in frames]
    raise ValueError(f"no test encoder for {syntax}")


def write_source(ds: Dataset, path: Path) -> Path:
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_derived(
    source: Dataset,
    frames: Sequence[np.ndarray],
    target: TargetEncoding,
    path: Path,
    uids: DerivedUIDs | None = None,
    source_path: Path | None = None,
) -> tuple[Path, list[str], list[bytes]]:
    """derive_header + EncapsulatedWriter, as the recode job uses them."""
    header, notes = derive_header(
        source,
        target,
        uids or new_uids(),
        source_path=source_path,
        now=FIXED_NOW,
        software_version="0.1.0",
    )
    encoded = encode_frames(frames, target)
    uncompressed = sum(frame.nbytes for frame in frames)
    with EncapsulatedWriter(path, header, len(encoded)) as writer:
        for data in encoded:
            writer.write_frame(data)
        writer.commit(uncompressed / sum(len(data) for data in encoded))
    return path, notes, encoded
