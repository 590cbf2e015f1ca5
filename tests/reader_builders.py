"""Small VL WSI files built with pydicom for the reader tests (frames and scan).

Tiles are tiny (8x8 by default) so that every test runs in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imagecodecs
import numpy as np
from pydicom import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def wsi_dataset(
    *,
    syntax: str = ExplicitVRLittleEndian,
    rows: int = 8,
    columns: int = 8,
    total_columns: int = 24,
    total_rows: int = 16,
    samples: int = 3,
    bits: int = 8,
    photometric: str = "RGB",
    frames: int | None = None,
    flavor: str = "VOLUME",
    organization: str | None = "TILED_FULL",
    series_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    patient_id: str = "P1",
    frame_of_reference_uid: str = "1.2.826.0.1.3680043.8.498.2",
) -> Dataset:
    """A VL WSI header (no Pixel Data) for one level of total_columns x total_rows."""
    tiles = -(-total_columns // columns) * -(-total_rows // rows)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = VL_WSI
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = VL_WSI
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", flavor, "NONE"]
    ds.Modality = "SM"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.ContainerIdentifier = "SLIDE-1"
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames if frames is not None else tiles
    ds.TotalPixelMatrixColumns = total_columns
    ds.TotalPixelMatrixRows = total_rows
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    if organization:
        ds.DimensionOrganizationType = organization
    return ds


def random_tiles(ds: Dataset, seed: int = 0) -> list[np.ndarray]:
    """One random tile per frame, shaped and typed as the header says."""
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if ds.BitsAllocated == 8 else np.uint16
    shape = (
        (ds.Rows, ds.Columns, ds.SamplesPerPixel)
        if ds.SamplesPerPixel > 1
        else (
            ds.Rows,
            ds.Columns,
        )
    )
    high = 2**ds.BitsStored
    return [rng.integers(0, high, size=shape, dtype=dtype) for _ in range(ds.NumberOfFrames)]


def write_native(path: Path, ds: Dataset, tiles: Sequence[np.ndarray]) -> Path:
    ds.PixelData = b"".join(t.tobytes() for t in tiles)
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg_frames(count: int, rows: int = 8, columns: int = 8, seed: int = 0) -> list[bytes]:
    """Real baseline JPEG codestreams (each ends with the FFD9 marker)."""
    rng = np.random.default_rng(seed)
    return [
        imagecodecs.jpeg8_encode(rng.integers(0, 256, (rows, columns, 3), dtype=np.uint8), 90)
        for _ in range(count)
    ]


def write_encapsulated(
    path: Path,
    ds: Dataset,
    frames: Sequence[bytes],
    *,
    bot: bool = True,
    fragments_per_frame: int = 1,
    extended: bool = False,
) -> Path:
    """Write frames encapsulated with a Basic Offset Table, none, or an Extended Offset Table."""
    if ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    if extended:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
            list(frames)
        )
    else:
        ds.PixelData = encapsulate(
            list(frames), fragments_per_frame=fragments_per_frame, has_bot=bot
        )
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def item(value: bytes) -> bytes:
    """One encapsulated item (FFFE,E000) holding value (padded to even length)."""
    value += b"\0" * (len(value) % 2)
    return b"\xfe\xff\x00\xe0" + len(value).to_bytes(4, "little") + value


def sequence_delimiter() -> bytes:
    return b"\xfe\xff\xdd\xe0" + b"\0" * 4
