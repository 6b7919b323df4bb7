"""Ingest: snapshot a landing batch into the lake, identified by the hash of its content.

The batch id is a hash of the manifest bytes and of every file it names, so the same bytes
are one batch however often they arrive, and a changed file makes a new batch.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from features.io import load_jsonl, make_staging_dir, publish_directory, save_json, save_jsonl
from features.manifest import FILE_FIELDS, MANIFEST_NAME, manifest_lines, parse_manifest, resolve_inside
from features.records import BatchError, QuarantineRecord, StageReport

ROWS_NAME = "rows.jsonl"
DONE_NAME = "_SUCCESS.json"
_CHUNK = 1 << 20
_UNREADABLE = {"bad_json", "bad_encoding"}  # reasons that mean a line was not a JSON object at all


@dataclass(frozen=True)
class IngestResult:
    batch_id: str
    batch_dir: Path  # the snapshot in the lake
    report: StageReport


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_if_readable(path: Path) -> str | None:
    """The file's sha256, or None when it is missing, not a regular file (a FIFO is never opened) or unreadable."""
    try:
        return hash_file(path) if path.is_file() else None
    except OSError:  # permission denied, name too long, vanished meanwhile
        return None


def _read_manifest(source: Path) -> bytes:
    manifest = source / MANIFEST_NAME
    if not source.is_dir():
        raise BatchError(
            f"{source} is not a folder; a landing batch is a folder holding {MANIFEST_NAME} and the files it names"
        )
    if not manifest.is_file():
        raise BatchError(
            f"{source} is not a landing batch: {MANIFEST_NAME} is missing; expected a UTF-8 JSON Lines file"
            " with one sample object per line"
        )
    try:
        resolve_inside(source, MANIFEST_NAME)
        return manifest.read_bytes()
    except ValueError as err:
        raise BatchError(f"{manifest} is refused: {err}; the manifest must be a file inside the batch") from err
    except OSError as err:
        raise BatchError(f"cannot read {manifest}: {err}") from err


def _refuse_unreadable_manifest(source: Path, rows: list[dict], rejected: list[QuarantineRecord]) -> None:
    """A manifest none of whose lines is a JSON object is the wrong file, not a batch of bad rows."""
    if rows or not rejected or any(record.reason not in _UNREADABLE for record in rejected):
        return
    raise BatchError(
        f"{source / MANIFEST_NAME} is not JSON Lines: none of its {len(rejected)} non-blank lines is a JSON object"
        f" ({rejected[0].detail}); expected one object per line, e.g."
        ' {"sample_id": "s1", "captured_at": "2026-01-01T00:00:00Z", "image": "images/s1.png"}'
    )


def _parse_and_hash(source: Path) -> tuple[bytes, list[dict], list[QuarantineRecord], str]:
    """Manifest bytes, accepted rows (each with `<field>_sha256` set), rejected rows and the batch id.

    The batch id hashes the manifest and every existing file it names (in manifest order).
    `<field>_sha256` keys are the lake's own: a manifest's keys of that name are replaced.
    """
    data = _read_manifest(source)
    rows, rejected = parse_manifest(data, source)
    _refuse_unreadable_manifest(source, rows, rejected)
    digest = hashlib.sha256(data)
    for row in rows:
        for field in FILE_FIELDS:
            row.pop(f"{field}_sha256", None)
            if row.get(field) is None:
                continue
            sha = row[f"{field}_sha256"] = _hash_if_readable(resolve_inside(source, row[field]))
            if sha is not None:
                digest.update(f"{field}:{row[field]}:{sha}".encode())
    return data, rows, rejected, digest.hexdigest()[:16]


def compute_batch_id(source: Path) -> str:
    """Content hash of the manifest and of every existing file it names (in manifest order)."""
    return _parse_and_hash(source)[3]


def _copy_files(source: Path, staging: Path, row: dict) -> None:
    """Copy the row's files (bytes, never links) to the same place under `staging`, paths normalised."""
    root = source.resolve()
    for field in FILE_FIELDS:
        if row.get(field) is None or row.get(f"{field}_sha256") is None:
            continue  # clean quarantines it as missing_file
        path = resolve_inside(source, row[field])
        relative = path.relative_to(root)
        target = staging / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        except OSError:  # vanished or became unreadable since it was hashed
            row[f"{field}_sha256"] = None
            continue
        row[field] = relative.as_posix()


def ingest_batch(source: Path, lake_raw: Path) -> IngestResult:
    """Copy the batch's manifest rows and files into `lake_raw/<batch_id>/`; a known batch is skipped.

    Rows with unreadable lines, missing fields or unsafe paths are quarantined; a batch with no
    manifest, or whose manifest holds no JSON object at all, raises BatchError. An empty manifest
    is an empty batch (0 rows), which validation later rejects as a whole.
    """
    data, rows, rejected, batch_id = _parse_and_hash(source)
    rows_in = len(manifest_lines(data))
    final = lake_raw / batch_id
    if (final / DONE_NAME).is_file():
        stored = load_jsonl(final / ROWS_NAME)
        report = StageReport("ingest", rows_in, len(stored), rejected, skipped=True)
        return IngestResult(batch_id, final, report)

    staging = make_staging_dir(final)
    try:
        (staging / MANIFEST_NAME).write_bytes(data)
        for row in rows:
            _copy_files(source, staging, row)
        save_jsonl(staging / ROWS_NAME, rows)
        save_json(staging / DONE_NAME, {"batch_id": batch_id, "source": str(source.resolve()), "rows": len(rows)})
        publish_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return IngestResult(batch_id, final, StageReport("ingest", rows_in, len(rows), rejected))


def list_ingested_batches(lake_raw: Path) -> list[str]:
    """Batch ids in the lake, oldest first."""
    done = [p for p in lake_raw.glob(f"*/{DONE_NAME}")] if lake_raw.exists() else []
    return [p.parent.name for p in sorted(done, key=lambda p: p.stat().st_mtime)]
