"""Ingest in chunks of manifest lines: however the lines are cut and wherever the chunks run, the batch id,
the snapshot and the quarantine are those of one pass over the whole manifest."""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from io import BytesIO
from itertools import repeat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import features.ingest as ingest
from features.ingest import DONE_NAME, ingest_batch
from features.manifest import iter_manifest_lines, split_manifest
from features.records import BatchError


def _png(seed: int) -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _row(sid: str, **files: str) -> bytes:
    return json.dumps({"sample_id": sid, "captured_at": "2026-01-01T00:00:00Z", **files}).encode()


@pytest.fixture
def awkward_batch(tmp_path) -> Path:
    """A manifest a user might really send: a byte-order mark, CRLF and CR line ends, blank lines, a line that
    is not JSON, an unsafe path, a missing file, a row without files; and enough rows for several chunks."""
    folder = tmp_path / "landing"
    (folder / "img").mkdir(parents=True)
    lines = [codecs.BOM_UTF8 + _row("s0", image="img/0.png")]
    for i in range(1, 12):
        (folder / "img" / f"{i}.png").write_bytes(_png(i))
        lines.append(_row(f"s{i}", image=f"img/{i}.png"))
    lines[3:3] = [b"", b"not json", _row("up", image="../outside.png"), b"   "]
    lines[9:9] = [_row("gone", image="img/missing.png"), _row("bare")]
    (folder / "img" / "0.png").write_bytes(_png(0))
    ends = [b"\r\n", b"\n", b"\n", b"\r"]
    (folder / "manifest.jsonl").write_bytes(b"".join(line + ends[i % 4] for i, line in enumerate(lines)) + b'{"half": ')
    return folder


def _snapshot(batch_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(batch_dir).as_posix(): p.read_bytes() for p in batch_dir.rglob("*")
            if p.is_file() and p.name != DONE_NAME}


def _records(result) -> list[dict]:
    return [dataclasses.asdict(record) for record in result.report.quarantined]


def _in_chunks_of(monkeypatch, lines: int) -> None:
    monkeypatch.setattr(ingest, "CHUNK_LINES", lines)
    monkeypatch.setattr(ingest, "MAX_CHUNK_LINES", lines)


def test_split_manifest_gives_back_every_line_with_its_number():
    data = codecs.BOM_UTF8 + b'{"a": 1}\r\n\n{"b": 2}\r{"c": 3}\n  \n{"d": 4}'
    whole = list(iter_manifest_lines(data))
    for size in (1, 2, 3, 100):
        runs = list(split_manifest(data, size))
        assert b"".join(text for _, text in runs) == data
        assert [line for first, text in runs for line in iter_manifest_lines(text, first)] == whole
    assert [number for number, _ in whole] == [1, 3, 4, 6]


@pytest.mark.parametrize("lines", [1, 2, 5])
def test_chunked_ingest_is_the_one_pass_ingest(awkward_batch, tmp_path, monkeypatch, lines):
    whole = ingest_batch(awkward_batch, tmp_path / "whole")  # 19 lines: one chunk at the shipped sizes
    _in_chunks_of(monkeypatch, lines)
    data = (awkward_batch / "manifest.jsonl").read_bytes()
    chunks = list(ingest.manifest_chunks(data, ingest.chunk_lines(data, workers=1)))
    assert len(chunks) > 3
    cut = ingest_batch(awkward_batch, tmp_path / f"cut-{lines}")
    assert cut.batch_id == whole.batch_id
    assert _snapshot(cut.batch_dir) == _snapshot(whole.batch_dir)
    assert _records(cut) == _records(whole)  # line numbers in the details included
    assert [r["reason"] for r in _records(cut)] == ["bad_json", "unsafe_path", "bad_json"]
    assert any("line 5:" in r["detail"] for r in _records(cut))
    assert cut.report.rows_in == whole.report.rows_in == 17
    assert cut.batch_id == _id_as_defined(awkward_batch)  # ids of batches already in a lake stay theirs


def _id_as_defined(folder: Path) -> str:
    """The batch id as ingest has always defined it: the manifest's bytes, then each existing file a well-formed
    row names as "<field>:<path>:<sha256>", in manifest order (here every image row but "gone" and "up")."""
    digest = hashlib.sha256((folder / "manifest.jsonl").read_bytes())
    for i in range(12):
        image = f"img/{i}.png"
        digest.update(f"image:{image}:{hashlib.sha256((folder / image).read_bytes()).hexdigest()}".encode())
    return digest.hexdigest()[:16]


def _on_processes(fn, chunks, *args):
    """A mapper that runs each chunk in another process, as a Dask worker would: only what pickles gets there."""
    with ProcessPoolExecutor(max_workers=2) as pool:
        yield from pool.map(fn, chunks, *(repeat(arg) for arg in args))


def test_chunks_run_in_other_processes_give_the_same_batch(awkward_batch, tmp_path, monkeypatch):
    whole = ingest_batch(awkward_batch, tmp_path / "whole")
    _in_chunks_of(monkeypatch, 4)
    spread = ingest_batch(awkward_batch, tmp_path / "spread", map_chunks=_on_processes)
    assert (spread.batch_id, _snapshot(spread.batch_dir), _records(spread)) == (
        whole.batch_id, _snapshot(whole.batch_dir), _records(whole))


def _lake_entries(lake: Path) -> list[str]:
    return sorted(p.name for p in lake.iterdir() if p.name != ".locks")  # the ingest lock's own folder is not state


def test_a_known_manifest_whose_file_changes_between_the_passes_stops_the_ingest(awkward_batch, tmp_path, monkeypatch):
    """A manifest already in the lake is scanned before it is copied; a later chunk's file rewritten in between
    (an upload still running) lands nothing."""
    _in_chunks_of(monkeypatch, 3)
    first = ingest_batch(awkward_batch, tmp_path / "lake")
    (awkward_batch / "img" / "1.png").write_bytes(_png(98))  # the same manifest, a new batch
    scan = ingest._scan_batch

    def scan_then_upload_more(*args, **kwargs):
        result = scan(*args, **kwargs)
        (awkward_batch / "img" / "11.png").write_bytes(_png(99))  # the last rows' chunk
        return result

    monkeypatch.setattr(ingest, "_scan_batch", scan_then_upload_more)
    with pytest.raises(BatchError, match="changed while it was ingested"):
        ingest_batch(awkward_batch, tmp_path / "lake")
    assert _lake_entries(tmp_path / "lake") == [first.batch_id]


def test_a_new_batch_is_read_once_and_a_repeat_is_only_read(awkward_batch, tmp_path, monkeypatch):
    """A new manifest's files are hashed as they are copied (no scan first); the same batch again is hashed and
    skipped without a byte written."""
    _in_chunks_of(monkeypatch, 4)
    calls = {"hash": 0, "copy": 0}
    hash_file, copy_and_hash = ingest.hash_file, ingest._copy_and_hash

    def counted(name, fn):
        def call(*args):
            calls[name] += 1
            return fn(*args)
        return call

    monkeypatch.setattr(ingest, "hash_file", counted("hash", hash_file))
    monkeypatch.setattr(ingest, "_copy_and_hash", counted("copy", copy_and_hash))
    first = ingest_batch(awkward_batch, tmp_path / "lake")
    assert calls == {"hash": 0, "copy": 12} and not first.report.skipped
    again = ingest_batch(awkward_batch, tmp_path / "lake")
    assert calls == {"hash": 12, "copy": 12} and again.report.skipped
    assert (again.batch_id, again.report.rows_in, again.report.rows_out, _records(again)) == (
        first.batch_id, first.report.rows_in, first.report.rows_out, _records(first))
    assert _lake_entries(tmp_path / "lake") == [first.batch_id]


def test_a_worker_that_does_not_see_the_batch_stops_the_ingest_instead_of_finding_every_file_missing(
        awkward_batch, tmp_path):
    """A Dask worker without the shared filesystem: the chunk names the folder it cannot see."""
    chunk = next(ingest.manifest_chunks((awkward_batch / "manifest.jsonl").read_bytes(), 4))
    elsewhere = tmp_path / "not-shared" / "landing"
    with pytest.raises(BatchError, match="landing folder .*not-shared/landing is not visible"):
        ingest.scan_manifest_chunk(chunk, elsewhere)
    with pytest.raises(BatchError, match="snapshot folder .*not-shared/staging is not visible"):
        ingest.copy_manifest_chunk(chunk, awkward_batch, tmp_path / "not-shared" / "staging")
    assert not (tmp_path / "not-shared").exists()  # nothing written where the lake is not
