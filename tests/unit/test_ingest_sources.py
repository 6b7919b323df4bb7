"""Ingest from fsspec URIs: the same bytes are the same batch wherever they land, and nothing outside the batch is read."""

from __future__ import annotations

import json
import uuid
from io import BytesIO
from pathlib import Path

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image

from features.clean import clean_batch
from features.ingest import DONE_NAME, ROWS_NAME, ingest_batch
from features.records import BatchError
from tests.unit.task_support import DIGITS
from tests.unit.params_support import clean_params


@pytest.fixture
def memory_root():
    """A fresh prefix on fsspec's process-wide in-memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/landing-{uuid.uuid4().hex[:8]}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Every path whose bytes the in-memory filesystem hands out."""
    seen: list[str] = []
    open_file, cat_file = MemoryFileSystem._open, MemoryFileSystem.cat_file

    def spy_open(self, path, mode="rb", *args, **kwargs):
        if "r" in mode:
            seen.append(self._strip_protocol(path))
        return open_file(self, path, mode, *args, **kwargs)

    def spy_cat(self, path, *args, **kwargs):
        seen.append(self._strip_protocol(path))
        return cat_file(self, path, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "_open", spy_open)
    monkeypatch.setattr(MemoryFileSystem, "cat_file", spy_cat)
    return seen


def _upload(fs: MemoryFileSystem, folder: Path, root: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fs.pipe_file(f"{root}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def _png() -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _lake_files(batch_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(batch_dir).as_posix(): p.read_bytes() for p in batch_dir.rglob("*") if p.is_file() and p.name != DONE_NAME}


def test_a_batch_has_one_id_from_a_folder_a_file_uri_or_memory(demo_batch_factory, memory_root, reads, tmp_path):
    source = demo_batch_factory(samples=80, seed=3, fault_rate=0.05)
    fs, root = memory_root
    _upload(fs, source, f"{root}/batch-1")
    uri = f"memory://{root}/batch-1"

    local = ingest_batch(source, tmp_path / "local")
    remote = ingest_batch(uri, tmp_path / "remote")
    assert remote.batch_id == local.batch_id and not remote.report.skipped
    assert _lake_files(remote.batch_dir) == _lake_files(local.batch_dir)  # rows.jsonl and every copied file
    assert json.loads((remote.batch_dir / DONE_NAME).read_text())["source"] == uri
    assert not any(read.endswith(("_truth.jsonl", "_faults.json")) for read in reads)  # only what the manifest names
    # the landing copy is gone (`.locks` holds the ingest lock files, features/locks.py)
    assert [p.name for p in (tmp_path / "remote").iterdir() if p.name != ".locks"] == [remote.batch_id]

    assert ingest_batch(uri, tmp_path / "remote").report.skipped
    for given in (source.as_uri(), str(source)):
        again = ingest_batch(given, tmp_path / "local")
        assert again.batch_id == local.batch_id and again.report.skipped
    by_uri = ingest_batch(source.as_uri(), tmp_path / "by-uri")
    assert json.loads((by_uri.batch_dir / DONE_NAME).read_text())["source"] == source.as_uri()


def test_unsafe_paths_are_quarantined_unread_and_missing_files_reach_clean(memory_root, reads, tmp_path):
    fs, root = memory_root
    fs.pipe_file(f"{root}/secret.png", _png())  # beside the batch, not in it
    fs.pipe_file(f"{root}/batch-1/images/ok.png", _png())
    rows = [
        {"sample_id": "ok", "image": "images/ok.png"},
        {"sample_id": "gone", "image": "images/gone.png"},
        {"sample_id": "up", "image": "../secret.png"},
        {"sample_id": "deep", "image": "images/../../secret.png"},
        {"sample_id": "absolute", "image": f"{root}/secret.png"},
    ]
    lines = [json.dumps({**row, "captured_at": "2026-01-01T00:00:00Z"}) for row in rows]
    fs.pipe_file(f"{root}/batch-1/manifest.jsonl", "\n".join(lines).encode())

    ingested = ingest_batch(f"memory://{root}/batch-1", tmp_path / "raw")
    assert {(q.sample_id, q.reason) for q in ingested.report.quarantined} == {
        ("up", "unsafe_path"), ("deep", "unsafe_path"), ("absolute", "unsafe_path")}
    assert reads and all(read.startswith(f"{root}/batch-1/") for read in reads)

    cleaned = clean_batch(ingested.batch_dir, tmp_path / "clean", clean_params(task=DIGITS))
    assert cleaned.rows["sample_id"].tolist() == ["ok"]
    assert [(q.sample_id, q.reason) for q in cleaned.report.quarantined] == [("gone", "missing_file")]


def test_sources_that_cannot_be_read_raise_a_batch_error_naming_them(memory_root, monkeypatch, tmp_path):
    fs, root = memory_root
    monkeypatch.setenv("FLYWHEEL_RETRY_WAIT_SCALE", "0")  # the backoff schedule is tested in test_transient_retries
    with pytest.raises(BatchError, match="nope://bucket/batch-1"):
        ingest_batch("nope://bucket/batch-1", tmp_path / "raw")
    fs.pipe_file(f"{root}/batch-1/images/a.png", _png())
    with pytest.raises(BatchError, match=f"memory://{root}/batch-1 is not a landing batch: manifest.jsonl is missing"):
        ingest_batch(f"memory://{root}/batch-1", tmp_path / "raw")

    fs.pipe_file(f"{root}/batch-1/manifest.jsonl", b'{"sample_id": "a", "captured_at": "2026-01-01", "image": "images/a.png"}\n')

    def unreachable(self, path, *args, **kwargs):
        raise ConnectionError("endpoint did not answer")

    monkeypatch.setattr(MemoryFileSystem, "_open", unreachable)  # the manifest arrives, then the store goes away
    with pytest.raises(BatchError, match=f"images/a.png of memory://{root}/batch-1: ConnectionError"):
        ingest_batch(f"memory://{root}/batch-1", tmp_path / "raw")
    assert not any((tmp_path / "raw").iterdir())  # no batch of "missing" files, no landing copy left behind
    monkeypatch.setattr(MemoryFileSystem, "cat_file", unreachable)
    with pytest.raises(BatchError, match=f"cannot read manifest.jsonl of memory://{root}/batch-1"):
        ingest_batch(f"memory://{root}/batch-1", tmp_path / "raw")
