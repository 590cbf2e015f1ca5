"""scan: finding VL WSI series in folders of real and built files, and reporting what is wrong."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from tests.reader_builders import (
    SHARED_DATA,
    jpeg_frames,
    random_tiles,
    write_encapsulated,
    write_native,
    wsi_dataset,
)
from wsitranscode.dicom.scan import Series, scan
from wsitranscode.errors import InvalidInputError

SERIES = "1.2.826.0.1.3680043.8.498.100"


def _category(reason: str) -> str:
    return reason.split(":")[0]


def _write_level(folder: Path, name: str, size: int, **kwargs) -> Path:
    ds = wsi_dataset(total_columns=size, total_rows=size, series_uid=SERIES, **kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    return write_native(folder / name, ds, random_tiles(ds))


def _write_slide(folder: Path) -> dict[str, Path]:
    """A pyramid of three levels, a label, an overview and a thumbnail, in nested folders."""
    return {
        "level0": _write_level(folder / "a", "level0", 64),
        "level1": _write_level(folder / "a", "level1.dcm", 32),
        "level2": _write_level(folder / "b" / "c", "x.dcm", 16),
        "label": _write_level(folder / "b", "label.dcm", 16, flavor="LABEL"),
        "overview": _write_level(folder, "overview.dcm", 24, flavor="OVERVIEW"),
        "thumbnail": _write_level(folder, "thumb", 8, flavor="THUMBNAIL"),
    }


def _only_series(result) -> Series:
    assert len(result.series) == 1, [s.uid for s in result.series]
    return result.series[0]


# ---------------------------------------------------------------------- a well-formed slide


def test_slide_is_one_series_with_sorted_levels(tmp_path: Path) -> None:
    files = _write_slide(tmp_path)
    result = scan(tmp_path)
    series = _only_series(result)
    assert series.problems == []
    assert result.skipped == []
    assert series.uid == SERIES
    assert series.patient_id == "P1"
    assert [i.flavor for i in series.instances] == [
        "VOLUME",
        "VOLUME",
        "VOLUME",
        "LABEL",
        "OVERVIEW",
        "THUMBNAIL",
    ]
    levels = series.levels()
    assert [(lv.total_columns, lv.total_rows) for lv in levels] == [(64, 64), (32, 32), (16, 16)]
    assert [lv.instances[0].path for lv in levels] == [
        files["level0"],
        files["level1"],
        files["level2"],
    ]
    assert levels[0].number_of_frames == 64
    assert series.transfer_syntaxes() == ["1.2.840.10008.1.2.1"]
    assert series.total_bytes == sum(p.stat().st_size for p in files.values())


def test_instance_fields_agree_with_pydicom(tmp_path: Path) -> None:
    files = _write_slide(tmp_path)
    for instance in _only_series(scan(tmp_path)).instances:
        ds = pydicom.dcmread(instance.path)
        assert instance.sop_instance_uid == ds.SOPInstanceUID
        assert instance.study_uid == ds.StudyInstanceUID
        assert instance.image_type == tuple(ds.ImageType)
        assert (instance.rows, instance.columns) == (ds.Rows, ds.Columns)
        assert (instance.total_columns, instance.total_rows) == (
            ds.TotalPixelMatrixColumns,
            ds.TotalPixelMatrixRows,
        )
        assert instance.number_of_frames == int(ds.NumberOfFrames)
        assert instance.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
        assert instance.photometric == ds.PhotometricInterpretation
        assert instance.dimension_organization == "TILED_FULL"
        assert instance.container_id == "SLIDE-1"
        assert instance.file_size == instance.path.stat().st_size
    assert len(files) == 6


def test_bits_per_pixel_counts_volume_files_over_stored_pixels(tmp_path: Path) -> None:
    files = _write_slide(tmp_path)
    volume = [files["level0"], files["level1"], files["level2"]]
    stored_pixels = (64 + 16 + 4) * 8 * 8
    expected = 8 * sum(p.stat().st_size for p in volume) / stored_pixels
    series = _only_series(scan(tmp_path))
    assert series.bits_per_pixel() == pytest.approx(expected)
    assert 24 < expected < 30  # uncompressed RGB plus headers


def test_scan_is_deterministic_and_reads_one_file(tmp_path: Path) -> None:
    files = _write_slide(tmp_path)
    first = scan(tmp_path)
    second = scan(tmp_path)
    assert [i.path for i in first.series[0].instances] == [
        i.path for i in second.series[0].instances
    ]
    single = _only_series(scan(files["label"]))
    assert [i.path for i in single.instances] == [files["label"]]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        scan(tmp_path / "nope")


# ---------------------------------------------------------------------- skipped files


def test_other_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    _write_level(tmp_path, "level0.dcm", 16)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").write_bytes(b"")
    # A DICOMDIR.
    dicomdir = Dataset()
    dicomdir.file_meta = pydicom.dataset.FileMetaDataset()
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dicomdir.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dicomdir.FileSetID = "T"
    dicomdir.DirectoryRecordSequence = []
    dicomdir.save_as(tmp_path / "DICOMDIR", enforce_file_format=True)
    # A DICOM file of another SOP class (Secondary Capture).
    other = wsi_dataset()
    other.SOPClassUID = other.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    write_native(tmp_path / "sc.dcm", other, random_tiles(other))
    result = scan(tmp_path)
    reasons = {p.name: r for p, r in ((s.path, s.reason) for s in result.skipped)}
    assert _category(reasons["notes.txt"]) == "not DICOM"
    assert _category(reasons["empty"]) == "not DICOM"
    assert _category(reasons["DICOMDIR"]) == "DICOMDIR"
    assert (
        reasons["sc.dcm"]
        == "not VL WSI: Secondary Capture Image Storage (1.2.840.10008.5.1.4.1.1.7)"
    )
    assert len(_only_series(result).instances) == 1


def test_symbolic_links_are_followed_only_when_asked(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write_level(outside, "level.dcm", 16)
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    (root / "linked-file.dcm").symlink_to(outside / "level.dcm")
    (root / "loop").symlink_to(root, target_is_directory=True)
    plain = scan(root)
    assert plain.series == []
    assert {_category(s.reason) for s in plain.skipped} == {"symbolic link"}
    followed = scan(root, follow_symlinks=True)
    # The same file reached twice is one instance, the second copy a duplicate.
    assert len(_only_series(followed).instances) == 1
    assert [_category(s.reason) for s in followed.skipped] == ["duplicate"]


# ---------------------------------------------------------------------- problems


def test_conflicting_patient_is_a_problem(tmp_path: Path) -> None:
    _write_level(tmp_path, "a.dcm", 32)
    _write_level(tmp_path, "b.dcm", 16, patient_id="SOMEONE-ELSE")
    (problem,) = _only_series(scan(tmp_path)).problems
    assert problem.startswith("instances disagree on PatientID: 'P1'")
    assert "b.dcm" in problem


def test_same_sop_instance_uid_with_other_content_is_a_problem(tmp_path: Path) -> None:
    first = _write_level(tmp_path, "a.dcm", 16)
    ds = pydicom.dcmread(first)
    ds.ContainerIdentifier = "OTHER"
    ds.save_as(tmp_path / "b.dcm")
    shutil.copy(first, tmp_path / "c.dcm")  # an identical copy is only a duplicate
    result = scan(tmp_path)
    (problem,) = _only_series(result).problems
    assert problem.startswith(f"{tmp_path / 'b.dcm'}: SOPInstanceUID ")
    assert [(s.path.name, _category(s.reason)) for s in result.skipped] == [("c.dcm", "duplicate")]


def test_missing_attribute_names_file_and_attribute(tmp_path: Path) -> None:
    ds = wsi_dataset(series_uid=SERIES)
    del ds.TotalPixelMatrixColumns
    path = write_native(tmp_path / "no-total.dcm", ds, random_tiles(ds))
    assert _only_series(scan(tmp_path)).problems == [f"{path}: missing TotalPixelMatrixColumns"]


def test_truncated_native_file_is_a_problem_of_its_series(tmp_path: Path) -> None:
    path = _write_level(tmp_path, "cut.dcm", 16)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 10)
    (problem,) = _only_series(scan(tmp_path)).problems
    assert problem.startswith(f"{path}: truncated: expected 768 bytes of pixel data")


def test_truncated_encapsulated_file_is_a_problem_of_its_series(tmp_path: Path) -> None:
    ds = wsi_dataset(series_uid=SERIES)
    path = write_encapsulated(tmp_path / "enc.dcm", ds, jpeg_frames(6), bot=True)
    assert _only_series(scan(tmp_path)).problems == []
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 20)
    (problem,) = _only_series(scan(tmp_path)).problems
    assert problem.startswith(f"{path}: truncated")


def test_header_cut_after_the_series_uid_is_a_problem_of_that_series(tmp_path: Path) -> None:
    _write_level(tmp_path, "good.dcm", 32)
    cut = _write_level(tmp_path, "cut.dcm", 16)
    data = cut.read_bytes()
    cut.write_bytes(data[: data.index(b"\x28\x00\x10\x00") + 6])  # inside the Rows element
    result = scan(tmp_path)
    series = _only_series(result)
    assert len(series.instances) == 1
    (problem,) = series.problems
    assert (
        problem == f"{cut}: truncated: the header ends at byte {cut.stat().st_size}, no Pixel Data"
    )


def test_file_cut_inside_the_meta_is_skipped(tmp_path: Path) -> None:
    path = _write_level(tmp_path, "cut.dcm", 16)
    path.write_bytes(path.read_bytes()[:150])
    result = scan(tmp_path)
    assert result.series == []
    assert [_category(s.reason) for s in result.skipped] == ["unreadable"]


def test_missing_concatenation_part_is_a_problem(tmp_path: Path) -> None:
    concatenation = generate_uid()
    paths = []
    for number, offset, frames in ((1, 0, 3), (2, 3, 3), (3, 6, 2)):
        ds = wsi_dataset(series_uid=SERIES, total_columns=32, total_rows=16, frames=frames)
        ds.ConcatenationUID = concatenation
        ds.InConcatenationNumber = number
        ds.InConcatenationTotalNumber = 3
        ds.ConcatenationFrameOffsetNumber = offset
        paths.append(write_native(tmp_path / f"part{4 - number}.dcm", ds, random_tiles(ds)))
    series = _only_series(scan(tmp_path))
    assert series.problems == []
    (level,) = series.levels()
    assert [i.path for i in level.instances] == paths  # in part order, not file name order
    assert level.number_of_frames == 8
    paths[1].unlink()
    (problem,) = _only_series(scan(tmp_path)).problems
    assert f"concatenation {concatenation}: has parts [1, 3] of 3" in problem


def test_elements_after_native_pixel_data_are_not_truncation(tmp_path: Path) -> None:
    ds = wsi_dataset(series_uid=SERIES)
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 8)
    write_native(tmp_path / "padded.dcm", ds, random_tiles(ds))
    ds = wsi_dataset(series_uid=SERIES, syntax=DeflatedExplicitVRLittleEndian, total_columns=8)
    write_native(tmp_path / "deflated.dcm", ds, random_tiles(ds))
    series = _only_series(scan(tmp_path))
    assert series.problems == []
    assert len(series.instances) == 2


# ---------------------------------------------------------------------- real sample files


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"sample data absent: {SHARED_DATA}")
def test_shared_samples(tmp_path: Path) -> None:
    result = scan(SHARED_DATA)
    instances = {i.path.name: (s, i) for s in result.series for i in s.instances}
    series, camelyon = instances["multiframe_camelyon_challenge_image.dcm"]
    assert series.problems == []
    assert camelyon.flavor == "VOLUME"
    assert camelyon.photometric == "YBR_FULL_422"
    assert (camelyon.total_columns, camelyon.total_rows) == (1152, 700)
    assert (camelyon.rows, camelyon.columns, camelyon.number_of_frames) == (256, 256, 15)
    assert series.bits_per_pixel() == pytest.approx(8 * camelyon.file_size / (15 * 256 * 256))
    # highdicom's control image reuses sm_image's SOPInstanceUID with other pixels: a conflict.
    control_series, _ = instances["sm_image.dcm"]
    assert any("sm_image_control.dcm: SOPInstanceUID" in p for p in control_series.problems)
    grey_series, grey = instances["sm_image_grayscale.dcm"]
    assert (grey.bits_allocated, grey.samples_per_pixel) == (16, 1)
    assert grey_series.problems == []
    skipped = {s.path.suffix for s in result.skipped}
    assert {".md", ".png", ".svs"} <= skipped
    assert {_category(s.reason) for s in result.skipped} == {"not DICOM"}
    assert all(os.access(i.path, os.R_OK) for s in result.series for i in s.instances)


# ---------------------------------------------------------------------- synth fixtures


def test_synth_slide_with_concatenation_and_mixed_syntaxes(tmp_path: Path) -> None:
    from wsitranscode import synth

    image = synth.synthetic_tissue(64, 96, seed=4)
    files = synth.build_wsi(
        image,
        tmp_path,
        tile_size=16,
        levels=3,
        overview=True,
        concatenation_frames=10,
        level_syntaxes={1: synth.JPEG_BASELINE, 2: synth.JPEG_2000_LOSSLESS},
    )
    result = scan(tmp_path)
    series = _only_series(result)
    assert series.problems == []
    assert result.skipped == []
    assert sorted(i.path for i in series.instances) == sorted(files)
    levels = series.levels()
    assert [(lv.total_columns, lv.total_rows) for lv in levels] == [(96, 64), (48, 32), (24, 16)]
    assert levels[0].number_of_frames == 24
    assert len(levels[0].instances) == 3  # 24 frames in parts of 10
    assert [i.in_concatenation_number for i in levels[0].instances] == [1, 2, 3]
    assert series.transfer_syntaxes() == sorted(
        {synth.EXPLICIT_VR_LITTLE_ENDIAN, synth.JPEG_BASELINE, synth.JPEG_2000_LOSSLESS}
    )
    assert {i.flavor for i in series.instances} == {"VOLUME", "LABEL", "OVERVIEW", "THUMBNAIL"}


def test_damaged_files_are_instances_problems_or_skipped(tmp_path: Path) -> None:
    """read_instance never raises on damaged files: it reports them."""
    import random

    from wsitranscode.dicom.scan import SkippedFile, read_instance

    source = _write_level(tmp_path, "good.dcm", 16).read_bytes()
    rng = random.Random(3)
    path = tmp_path / "damaged.dcm"
    kinds = set()
    for _ in range(200):
        data = bytearray(source)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(128, len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        found = read_instance(path)
        if isinstance(found, SkippedFile):
            kinds.add("skipped")
            assert found.path == path
        elif isinstance(found, tuple):
            kinds.add("problems" if found[1] else "instance")
            assert all(p.startswith(f"{path}: ") for p in found[1])
        else:
            kinds.add("unreadable")
            assert found.path == path
    assert {"skipped", "problems", "instance"} <= kinds


def test_a_recode_output_read_as_input_shows_only_its_published_series(tmp_path: Path) -> None:
    """validate, export and ls read recode outputs: the run record and the lock are ours, not
    'non-WSI files', and an interrupted run's staging folder is not read as a second copy."""
    from tests.dicom_checks import published_outputs
    from wsitranscode.codecs.base import EncodeSettings
    from wsitranscode.layout import LOCK_NAME, RUN_RECORD_NAME, STAGING_PREFIX
    from wsitranscode.recode import RecodeOptions, recode

    _write_slide(tmp_path / "in")
    out = tmp_path / "out"
    assert (
        recode(
            tmp_path / "in", out, RecodeOptions("jxl", EncodeSettings(lossless=True))
        ).exit_code()
        == 0
    )
    (published,) = {p.parent for p in published_outputs(out)}
    shutil.copytree(published, out / (STAGING_PREFIX + published.name))
    (out / LOCK_NAME).write_text("")
    assert (out / RUN_RECORD_NAME).is_file()

    result = scan(out)
    (series,) = result.series
    assert {i.path.parent for i in series.instances} == {published}
    assert [(s.path.name, s.reason) for s in result.skipped] == [
        (STAGING_PREFIX + published.name,
         "staging folder of an unfinished wsitranscode run: not read")
    ]  # fmt: skip
