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
from features.manifest import FILE_FIELDS, MANIFEST_NAME, count_manifest_rows, parse_manifest, resolve_inside
from features.records import StageReport

ROWS_NAME = "rows.jsonl"
DONE_NAME = "_SUCCESS.json"
_CHUNK = 1 << 20


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


def compute_batch_id(source: Path) -> str:
    """Content hash of the manifest and of every existing file it names (in manifest order)."""
    manifest = source / MANIFEST_NAME
    text = manifest.read_text(encoding="utf-8")
    rows, _ = parse_manifest(text, source)
    digest = hashlib.sha256(text.encode())
    for row in rows:
        for field in FILE_FIELDS:
            if row.get(field) is None:
                continue
            path = resolve_inside(source, row[field])
            if path.is_file():
                digest.update(f"{field}:{row[field]}:{hash_file(path)}".encode())
    return digest.hexdigest()[:16]


def ingest_batch(source: Path, lake_raw: Path) -> IngestResult:
    """Copy the batch's manifest rows and files into `lake_raw/<batch_id>/`; a known batch is skipped."""
    manifest = source / MANIFEST_NAME
    if not manifest.is_file():
        raise FileNotFoundError(f"{source} is not a landing batch: {MANIFEST_NAME} is missing")
    batch_id = compute_batch_id(source)
    final = lake_raw / batch_id
    text = manifest.read_text(encoding="utf-8")
    rows_in = count_manifest_rows(text)
    rows, rejected = parse_manifest(text, source)
    if (final / DONE_NAME).is_file():
        stored = load_jsonl(final / ROWS_NAME)
        report = StageReport("ingest", rows_in, len(stored), rejected, skipped=True)
        return IngestResult(batch_id, final, report)

    staging = make_staging_dir(final)
    try:
        shutil.copy2(manifest, staging / MANIFEST_NAME)
        for row in rows:
            for field in FILE_FIELDS:
                if row.get(field) is None:
                    continue
                path = resolve_inside(source, row[field])
                if not path.is_file():
                    row[f"{field}_sha256"] = None  # clean quarantines it as missing_file
                    continue
                row[f"{field}_sha256"] = hash_file(path)
                target = staging / row[field]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)  # copies bytes, never a link that could point out later
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
