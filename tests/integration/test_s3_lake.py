"""s3:// landing batches and the lake's S3 remote, against a real S3 endpoint (moto's server
stands in for the compose stack's MinIO: same wire protocol, started in-process)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from features.ingest import compute_batch_id, ingest_batch
from features.lake_versioning import open_lake
from features.records import BatchError

pytestmark = pytest.mark.slow
KEY, SECRET = "flywheel-test", "flywheel-test-secret"


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """An s3fs filesystem on the endpoint; DVC's remote reads the same credentials from the environment."""
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, endpoint_url=s3_endpoint, skip_instance_cache=True)
    yield fs, {"endpoint_url": s3_endpoint, "key": KEY, "secret": SECRET}


def test_an_s3_batch_is_the_same_batch_as_its_local_copy(s3, demo_batch_factory, tmp_path):
    fs, options = s3
    local = demo_batch_factory(samples=40, seed=21)
    fs.mkdir("landing")
    fs.put(str(local), "landing/batch-a", recursive=True)

    first = ingest_batch("s3://landing/batch-a", tmp_path / "raw", options)
    assert first.batch_id == compute_batch_id(local)
    assert first.report.rows_in == first.report.rows_out + first.report.rows_quarantined
    again = ingest_batch("s3://landing/batch-a", tmp_path / "raw", options)
    assert again.report.skipped and again.batch_id == first.batch_id

    changed = sorted(fs.find("landing/batch-a/images"))[0]
    fs.pipe(changed, fs.cat(changed) + b"\0")  # same name, new bytes: a new version of the batch
    assert ingest_batch("s3://landing/batch-a", tmp_path / "raw", options).batch_id != first.batch_id


def test_an_unreachable_or_missing_s3_batch_is_a_clear_error(s3, tmp_path, monkeypatch):
    _, options = s3
    # The retry schedule itself is tested in tests/unit/test_transient_retries.py: here only the error.
    monkeypatch.setenv("FLYWHEEL_RETRY_WAIT_SCALE", "0")
    with pytest.raises(BatchError, match="manifest.jsonl is missing"):
        ingest_batch("s3://landing/no-such-batch", tmp_path / "raw", options)
    with pytest.raises(BatchError, match="cannot read manifest.jsonl of s3://landing/x"):
        ingest_batch("s3://landing/x", tmp_path / "raw", {**options, "endpoint_url": "http://127.0.0.1:9",
                                                           "config_kwargs": {"retries": {"max_attempts": 1}}})


def test_lake_versions_push_to_s3_and_come_back_from_it(s3, s3_endpoint, tmp_path):
    fs, _ = s3
    fs.mkdir("lake")
    home = tmp_path / "home"
    data = home / "feast" / "data"
    data.mkdir(parents=True)
    (data / "labels.parquet").write_bytes(b"version one")
    lake = open_lake(home, "s3://lake/flywheel", s3_endpoint)
    first = lake.track("feast/data")
    assert lake.push("feast/data") >= 1
    assert fs.find("lake/flywheel"), "the push left nothing on the S3 remote"

    (data / "labels.parquet").write_bytes(b"version two")
    assert lake.track("feast/data").md5 != first.md5
    lake.push("feast/data")
    shutil.rmtree(home / ".dvc" / "cache")  # only the S3 remote still has version one
    restored = lake.checkout("feast/data", first.md5)
    assert restored.md5 == first.md5 and (data / "labels.parquet").read_bytes() == b"version one"
