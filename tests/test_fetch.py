"""`wsitranscode fetch` end to end against a real S3-compatible server on 127.0.0.1.

The server is moto's (`moto_server`), started and stopped here by its process id. It holds a
public bucket named and keyed like IDC's (`s3://idc-open-data/<crdc_series_uuid>/<uuid>.dcm`)
for a few real RMS series of the packaged index: small generated DICOM WSI instances whose
patient, study and series UIDs are the real ones and whose count is the index's instanceCount.
Their bytes are not the real slides' (gigabytes), so tests that download pass
--allow-index-size-mismatch, and one test shows that without it the size check fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("idc_index", reason="fetch needs idc-index: pip install 'wsitranscode[idc]'")
pytest.importorskip("boto3", reason="the test S3 server needs moto[server] (brings boto3)")

from wsitranscode import idc
from wsitranscode.cli import main

BUCKET = "idc-open-data"
RMS = "rms_mutation_prediction"
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
ALLOW = "--allow-index-size-mismatch"
_FETCH = ("fetch", "--collection", "rms")


# ---------------------------------------------------------------------------------------------
# The packaged index, read independently of wsitranscode.idc


def _index_rows() -> list[dict]:
    import idc_index_data
    import pyarrow.parquet as pq

    table = pq.read_table(
        idc_index_data.IDC_INDEX_PARQUET_FILEPATH,
        columns=[
            "collection_id",
            "PatientID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "Modality",
            "instanceCount",
            "series_size_MB",
            "series_aws_url",
            "TransferSyntaxUID",
        ],
        filters=[("collection_id", "=", RMS)],
    )
    return table.to_pylist()


@dataclass(frozen=True)
class RealSeries:
    patient_id: str
    study_uid: str
    series_uid: str
    crdc_uuid: str
    instance_count: int


def _pick_series(count: int) -> list[RealSeries]:
    """Lossless RMS slide series of distinct patients, in a fixed order."""
    rows = sorted(
        (
            r
            for r in _index_rows()
            if r["Modality"] == "SM" and ".4.91" not in r["TransferSyntaxUID"]
        ),
        key=lambda r: r["SeriesInstanceUID"],
    )
    picked: list[RealSeries] = []
    for r in rows:
        if r["PatientID"] in {p.patient_id for p in picked}:
            continue
        picked.append(
            RealSeries(
                r["PatientID"],
                r["StudyInstanceUID"],
                r["SeriesInstanceUID"],
                r["series_aws_url"].split("/")[3],
                int(r["instanceCount"]),
            )
        )
        if len(picked) == count:
            return picked
    raise AssertionError("the packaged index has too few RMS slide series")


GOOD_A, GOOD_B, MISSING, TRUNCATED, BIG = _pick_series(5)


@pytest.fixture(scope="module", autouse=True)
def _release_the_idc_client():
    """An IDCClient holds about 1.7 GB: do not keep it for the rest of the test session."""
    yield
    idc.idc_client.cache_clear()


# ---------------------------------------------------------------------------------------------
# The S3 server and its content


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("moto_server did not start listening")


@pytest.fixture(scope="session")
def s3_url(tmp_path_factory):
    if not MOTO_SERVER.is_file():
        pytest.skip("moto_server not installed: pip install 'moto[server]'")
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    try:
        _wait_for_port(port, process)
        url = f"http://127.0.0.1:{port}"
        _create_public_bucket(url)
        yield url
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _s3(url: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def _create_public_bucket(url: str) -> None:
    client = _s3(url)
    client.create_bucket(Bucket=BUCKET)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
            }
        ],
    }
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))


def _build_series(series: RealSeries, out: Path, image: np.ndarray, tile: int) -> list[Path]:
    """instanceCount generated instances carrying the real series' UIDs."""
    from wsitranscode.synth import build_wsi

    files = build_wsi(
        image,
        out,
        tile_size=tile,
        levels=series.instance_count - 3,
        label=True,
        overview=True,
        thumbnail=True,
        patient_id=series.patient_id,
        study_uid=series.study_uid,
        series_uid=series.series_uid,
        seed=int(series.crdc_uuid[:6], 16),
    )
    assert len(files) == series.instance_count
    return files


def _object_name(series: RealSeries, path: Path) -> str:
    # IDC names files <crdc_instance_uuid>.dcm
    return f"{uuid.uuid5(uuid.NAMESPACE_URL, series.series_uid + '/' + path.name)}.dcm"


@dataclass
class Uploaded:
    url: str
    sources: dict[str, dict[str, bytes]]  # series uid -> object name -> bytes served


@pytest.fixture(scope="session")
def bucket(s3_url, tmp_path_factory) -> Uploaded:
    from wsitranscode.synth import synthetic_tissue

    client = _s3(s3_url)
    work = tmp_path_factory.mktemp("idc-sources")
    small = synthetic_tissue(128, 128, seed=1)
    noise = np.random.default_rng(0).integers(0, 255, (4096, 4096, 3), dtype=np.uint8)
    sources: dict[str, dict[str, bytes]] = {}
    for series, image, tile in (
        (GOOD_A, small, 32),
        (GOOD_B, small, 32),
        (MISSING, small, 32),
        (TRUNCATED, small, 32),
        (BIG, noise, 512),
    ):
        served: dict[str, bytes] = {}
        for path in _build_series(series, work / series.series_uid, image, tile):
            data = path.read_bytes()
            if series is TRUNCATED and path.name == "level0.dcm":
                data = data[: len(data) // 2]
            if series is MISSING and path.name == "label.dcm":
                continue
            served[_object_name(series, path)] = data
        for name, data in served.items():
            client.put_object(Bucket=BUCKET, Key=f"{series.crdc_uuid}/{name}", Body=data)
        sources[series.series_uid] = served
    return Uploaded(s3_url, sources)


def _fetch(out: Path, bucket: Uploaded, *series: RealSeries, extra: tuple[str, ...] = ()) -> int:
    uids = ",".join(s.series_uid for s in series)
    return main([*_FETCH, "--series", uids, "-o", str(out), "--endpoint-url", bucket.url, *extra])


def _series_folder(out: Path, series: RealSeries) -> Path:
    return out / RMS / series.patient_id / series.study_uid / f"SM_{series.series_uid}"


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------------------------
# Selection, sizes, manifests (offline)


def test_unknown_collection_names_the_closest_matches(capsys):
    assert main(["fetch", "--collection", "rms_mutaton", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown IDC collection 'rms_mutaton'" in err
    assert "rms_mutation_prediction" in err


def test_alias_and_id_select_the_same_series():
    by_alias = idc.select("rms")
    by_id = idc.select(RMS)
    assert [r.series_uid for r in by_alias.series] == [r.series_uid for r in by_id.series]
    expected = {r["SeriesInstanceUID"] for r in _index_rows() if r["Modality"] == "SM"}
    assert {r.series_uid for r in by_alias.series} == expected


def test_dry_run_sizes_equal_the_index_and_nothing_is_downloaded(tmp_path, capsys):
    out = tmp_path / "never-created"
    code = main(
        [
            *_FETCH,
            "--lossless-only",
            "--limit",
            "7",
            "--seed",
            "3",
            "--dry-run",
            "--json",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    payload = _json_out(capsys)
    index = {r["SeriesInstanceUID"]: r for r in _index_rows()}
    assert payload["series"], "the draw selected nothing"
    for row in payload["series"]:
        real = index[row["series_instance_uid"]]
        assert row["size_bytes"] == round(real["series_size_MB"] * 1_000_000)
        assert row["instance_count"] == real["instanceCount"]
        assert row["patient_id"] == real["PatientID"]
        assert ".4.91" not in real["TransferSyntaxUID"]
    assert payload["total_bytes"] == sum(r["size_bytes"] for r in payload["series"])
    assert payload["patient_count"] == 7
    assert payload["free_bytes"] > 0
    assert payload["fits"] == (payload["needed_bytes"] <= payload["free_bytes"])
    assert payload["needed_bytes"] == payload["total_bytes"]
    assert not out.exists()


def test_lossless_only_excludes_the_lossy_jpeg2000_series():
    everything = {r.series_uid for r in idc.select("rms").series}
    lossless = {r.series_uid for r in idc.select("rms", lossless_only=True).series}
    lossy = {
        r["SeriesInstanceUID"]
        for r in _index_rows()
        if r["Modality"] == "SM" and "1.2.840.10008.1.2.4.91" in r["TransferSyntaxUID"]
    }
    assert lossy and lossy <= everything
    assert lossless == everything - lossy


def test_limit_draws_patients_reproducibly():
    first = idc.select("rms", limit=10, seed=42)
    again = idc.select("rms", limit=10, seed=42)
    other = idc.select("rms", limit=10, seed=43)
    assert len(first.patients) == 10
    assert first.patients == again.patients
    assert first.patients != other.patients
    # every slide series of a drawn patient comes along
    all_rows = [r for r in _index_rows() if r["Modality"] == "SM"]
    expected = {r["SeriesInstanceUID"] for r in all_rows if r["PatientID"] in first.patients}
    assert {r.series_uid for r in first.series} == expected


def test_with_annotations_adds_the_patients_sr_and_seg_series():
    plain = idc.select("rms", limit=20, seed=1)
    annotated = idc.select("rms", limit=20, seed=1, with_annotations=True)
    added = [r for r in annotated.series if r.modality != "SM"]
    expected = {
        r["SeriesInstanceUID"]
        for r in _index_rows()
        if r["Modality"] in ("SR", "SEG") and r["PatientID"] in plain.patients
    }
    assert added and {r.series_uid for r in added} == expected
    assert {r.modality for r in added} <= {"SR", "SEG"}


def test_unknown_patient_or_series_is_a_usage_error(capsys):
    assert main(["fetch", "--collection", "rms", "--patients", "NOPE1", "--dry-run"]) == 2
    assert "NOPE1" in capsys.readouterr().err
    assert main(["fetch", "--collection", "rms", "--series", "1.2.3.4", "--dry-run"]) == 2
    assert "1.2.3.4" in capsys.readouterr().err


def test_manifest_round_trip(tmp_path, capsys):
    manifest = tmp_path / "sel.s5cmd"
    args = ["fetch", "--collection", "rms", "--lossless-only", "--limit", "3", "--seed", "9"]
    assert main([*args, "--dry-run", "--json", "--manifest", str(manifest)]) == 0
    selected = _json_out(capsys)
    lines = [x for x in manifest.read_text().splitlines() if x and not x.startswith("#")]
    assert lines == [f"cp {row['url']} ." for row in selected["series"]]
    sidecar = json.loads(idc.sidecar_path(manifest).read_text())
    assert sidecar["total_bytes"] == selected["total_bytes"]
    assert [s["series_instance_uid"] for s in sidecar["series"]] == [
        s["series_instance_uid"] for s in selected["series"]
    ]
    assert main(["fetch", "--from-manifest", str(manifest), "--dry-run", "--json"]) == 0
    again = _json_out(capsys)
    assert again["series"] == selected["series"]


def test_manifest_without_sidecar_resolves_through_the_index(tmp_path, capsys):
    manifest = tmp_path / "idc-portal.s5cmd"
    manifest.write_text(f"cp s3://{BUCKET}/{GOOD_A.crdc_uuid}/* .\n")
    assert main(["fetch", "--from-manifest", str(manifest), "--dry-run", "--json"]) == 0
    (row,) = _json_out(capsys)["series"]
    assert row["series_instance_uid"] == GOOD_A.series_uid


def test_manifest_naming_an_unknown_series_is_refused(tmp_path, capsys):
    manifest = tmp_path / "bad.s5cmd"
    manifest.write_text(f"cp s3://{BUCKET}/00000000-0000-0000-0000-000000000000/* .\n")
    assert main(["fetch", "--from-manifest", str(manifest), "--dry-run"]) == 2
    assert "not in the packaged IDC index" in capsys.readouterr().err


def test_disk_space_check_refuses_what_does_not_fit(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    idc.check_disk_space(1, tmp_path)
    with pytest.raises(idc.DiskSpaceError, match=r"only .* is free"):
        idc.check_disk_space(free + 10**12, tmp_path / "not" / "yet")


# ---------------------------------------------------------------------------------------------
# The per-file DICOM completeness check


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"])
def test_dicom_check_catches_a_file_cut_anywhere(tmp_path, syntax):
    from wsitranscode.synth import build_wsi, synthetic_tissue

    files = build_wsi(
        synthetic_tissue(64, 64, seed=2),
        tmp_path / "src",
        transfer_syntax=syntax,
        tile_size=32,
        levels=1,
        label=False,
        thumbnail=False,
        series_uid="1.2.826.0.1.3680043.8.498.1",
    )
    path = files[0]
    assert idc.dicom_file_problem(path, "1.2.826.0.1.3680043.8.498.1") is None
    assert "expected 9.9" in idc.dicom_file_problem(path, "9.9")
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    for keep in (100, len(data) // 3, len(data) // 2, len(data) - 9, len(data) - 1):
        cut.write_bytes(data[:keep])
        problem = idc.dicom_file_problem(cut, "1.2.826.0.1.3680043.8.498.1")
        assert problem is not None, f"cut at {keep} of {len(data)} bytes passed"


# ---------------------------------------------------------------------------------------------
# Downloads against the local S3 server


def test_unreachable_endpoint_is_one_line(tmp_path, capsys, monkeypatch):
    closed = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    code = main(
        [
            *_FETCH,
            "--series",
            GOOD_A.series_uid,
            "-o",
            str(tmp_path),
            "--endpoint-url",
            closed,
            ALLOW,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert time.monotonic() - started < 30
    # one message (rich may wrap it to the terminal's width), no traceback
    assert err.count("error:") == 1 and "Traceback" not in err
    assert f"cannot reach the download endpoint {closed}" in " ".join(err.split())
    monkeypatch.setenv(idc.ENDPOINT_ENV_VAR, closed)
    assert main([*_FETCH, "--series", GOOD_A.series_uid, "-o", str(tmp_path), ALLOW]) == 1
    assert closed in capsys.readouterr().err


def test_full_fetch_then_ls_and_recode(bucket, tmp_path, capsys):
    out = tmp_path / "idc"
    assert _fetch(out, bucket, GOOD_A, GOOD_B, extra=(ALLOW, "--json")) == 0
    payload = _json_out(capsys)
    assert payload["ok"] and payload["downloaded_series"] == 2
    for series in (GOOD_A, GOOD_B):
        folder = _series_folder(out, series)
        served = bucket.sources[series.series_uid]
        assert sorted(p.name for p in folder.iterdir()) == sorted(served)
        for name, data in served.items():
            assert (folder / name).read_bytes() == data
    checks = {s["series_instance_uid"]: s for s in payload["series"]}
    assert checks[GOOD_A.series_uid]["local_files"] == GOOD_A.instance_count
    assert any("IDC index says" in n for n in checks[GOOD_A.series_uid]["notes"])

    assert main(["ls", str(out), "--json"]) == 0
    listed = _json_out(capsys)["series"]
    assert {s["series_instance_uid"] for s in listed} == {GOOD_A.series_uid, GOOD_B.series_uid}
    assert {s["patient_id"] for s in listed} == {GOOD_A.patient_id, GOOD_B.patient_id}

    if importlib.util.find_spec("wsitranscode.commands.recode") is None:
        pytest.skip("recode command not written yet (wsitranscode.commands.recode)")
    recoded = tmp_path / "recoded"
    assert main(["recode", str(out), "-o", str(recoded), "--codec", "jpeg", "--q", "80"]) == 0
    outputs = [p for p in recoded.rglob("*.dcm") if ".partial" not in str(p.parent)]
    assert len(outputs) == GOOD_A.instance_count + GOOD_B.instance_count
    patients = {pydicom.dcmread(p, stop_before_pixels=True).PatientID for p in outputs}
    assert patients == {GOOD_A.patient_id, GOOD_B.patient_id}


def test_rerun_of_a_complete_fetch_downloads_nothing(bucket, tmp_path, capsys):
    out = tmp_path / "idc"
    assert _fetch(out, bucket, GOOD_A, extra=(ALLOW, "--json")) == 0
    capsys.readouterr()
    files = sorted(_series_folder(out, GOOD_A).iterdir())
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    assert _fetch(out, bucket, GOOD_A, extra=(ALLOW, "--json")) == 0
    payload = _json_out(capsys)
    assert payload["downloaded_series"] == 0 and payload["bytes_to_download"] == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == before


def test_sizes_differing_from_the_index_fail_without_the_flag(bucket, tmp_path, capsys):
    assert _fetch(tmp_path / "idc", bucket, GOOD_B) == 1
    err = capsys.readouterr().err
    assert GOOD_B.series_uid in err and "the IDC index says" in err


def test_missing_object_is_an_error_naming_the_series(bucket, tmp_path, capsys):
    assert _fetch(tmp_path / "idc", bucket, MISSING, extra=(ALLOW, "--json")) == 1
    captured = capsys.readouterr()
    (check,) = _json_out_from(captured.out)["series"]
    assert not check["ok"]
    assert (
        f"{MISSING.instance_count - 1} of {MISSING.instance_count} files (IDC index)"
        in (check["problems"])
    )
    assert MISSING.series_uid in captured.err and "incomplete" in captured.err
    assert "the endpoint lacks objects" in " ".join(captured.err.split())


def _json_out_from(text: str) -> dict:
    return json.loads(text)


def test_truncated_object_at_the_endpoint_is_caught(bucket, tmp_path, capsys):
    assert _fetch(tmp_path / "idc", bucket, TRUNCATED, extra=(ALLOW,)) == 1
    err = capsys.readouterr().err
    assert TRUNCATED.series_uid in err and "truncated" in err
    # the sizes match the listing: only the DICOM check can see it
    folder = _series_folder(tmp_path / "idc", TRUNCATED)
    served = bucket.sources[TRUNCATED.series_uid]
    assert {p.name: p.stat().st_size for p in folder.iterdir()} == {
        n: len(d) for n, d in served.items()
    }


def test_local_truncation_and_deletion_are_repaired_by_a_rerun(bucket, tmp_path, capsys):
    out = tmp_path / "idc"
    assert _fetch(out, bucket, GOOD_A, extra=(ALLOW,)) == 0
    folder = _series_folder(out, GOOD_A)
    victims = sorted(folder.iterdir())
    cut, gone, kept = victims[0], victims[1], victims[2:]
    cut.write_bytes(cut.read_bytes()[:1000])
    gone.unlink()
    untouched = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept}
    capsys.readouterr()
    assert (
        main([*_FETCH, "--series", GOOD_A.series_uid, "-o", str(out), "--verify-only", ALLOW]) == 1
    )
    err = capsys.readouterr().err
    assert GOOD_A.series_uid in err
    assert _fetch(out, bucket, GOOD_A, extra=(ALLOW,)) == 0
    served = bucket.sources[GOOD_A.series_uid]
    assert cut.read_bytes() == served[cut.name] and gone.read_bytes() == served[gone.name]
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == untouched


def _s5cmd_children() -> list:
    import psutil

    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == "s5cmd":
                children.append(child)
        except psutil.NoSuchProcess:
            continue
    return children


def test_interrupted_download_fails_verification_then_resumes(bucket, tmp_path, capsys):
    out = tmp_path / "idc"
    folder = _series_folder(out, BIG)
    codes: list[int] = []
    runner = threading.Thread(
        target=lambda: codes.append(_fetch(out, bucket, BIG, extra=(ALLOW,))), daemon=True
    )
    runner.start()
    killed = False
    deadline = time.monotonic() + 120
    while runner.is_alive() and time.monotonic() < deadline and not killed:
        partials = [p for p in folder.glob("*.dcm*") if not p.name.endswith(".dcm")]
        if partials:
            for child in _s5cmd_children():
                os.kill(child.pid, signal.SIGKILL)
                killed = True
        time.sleep(0.005)
    runner.join(120)
    assert killed, "the download finished before it could be interrupted"
    assert codes == [1]
    err = capsys.readouterr().err
    assert BIG.series_uid in err and "incomplete" in err
    served = bucket.sources[BIG.series_uid]
    complete = {p.name for p in folder.glob("*.dcm") if p.read_bytes() == served.get(p.name)}
    assert complete != set(served), "nothing was left to resume"

    assert _fetch(out, bucket, BIG, extra=(ALLOW,)) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(served)
    for name, data in served.items():
        assert (folder / name).read_bytes() == data


def test_disk_space_refusal_downloads_nothing(bucket, tmp_path, capsys):
    total = sum(round(r["series_size_MB"] * 1e6) for r in _index_rows() if r["Modality"] == "SM")
    if shutil.disk_usage(tmp_path).free >= total:
        pytest.skip("this disk could hold the whole RMS collection")
    out = tmp_path / "idc"
    code = main(["fetch", "--collection", "rms", "-o", str(out), "--endpoint-url", bucket.url])
    assert code == 1
    err = capsys.readouterr().err
    assert f"the selection needs {idc.human_bytes(total)}" in err and "is free" in err
    assert not out.exists()


SAMPLES = Path(__file__).resolve().parents[1] / "sample_manifests"
SAMPLE_ARGS = {
    "rms-1-small-lossless.s5cmd": [
        "--lossless-only",
        "--max-series-size",
        "500MB",
        "--limit",
        "1",
        "--seed",
        "0",
    ],
    "rms-10-lossless.s5cmd": ["--lossless-only", "--limit", "10", "--seed", "0"],
    "rms-100-random-seed0.s5cmd": ["--limit", "100", "--seed", "0"],
    "rms-all.s5cmd": ["--with-annotations"],
}


@pytest.mark.parametrize("name", sorted(SAMPLE_ARGS))
def test_sample_manifests_are_what_the_tool_writes(name, tmp_path, capsys):
    committed = SAMPLES / name
    sidecar = json.loads(idc.sidecar_path(committed).read_text())
    if sidecar["criteria"]["idc_index_data"] != idc.index_version():
        pytest.skip("the packaged IDC index is another version: regenerate sample_manifests/")
    fresh = tmp_path / name
    assert main([*_FETCH, *SAMPLE_ARGS[name], "--dry-run", "--json", "--manifest", str(fresh)]) == 0
    capsys.readouterr()
    assert fresh.read_text() == committed.read_text()
    assert idc.sidecar_path(fresh).read_text() == idc.sidecar_path(committed).read_text()
    readme = (SAMPLES / "README.md").read_text()
    assert f"{sidecar['total_bytes']:,} bytes" in readme
