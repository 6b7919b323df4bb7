"""File I/O of the feature pipeline: JSON, JSONL and parquet tables, quarantine files, all written atomically
(`features.atomic`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa

from features.atomic import atomic_path, atomic_write_bytes
from features.records import QuarantineRecord, StageReport


def save_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=2, default=str, ensure_ascii=False).encode())


def save_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    text = "".join(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_bytes(path, text.encode())


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def save_parquet(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def save_table(path: Path, table: pa.Table) -> None:
    """An Arrow table as parquet, as it is: a table read from parquet parts that pandas wrote keeps their
    schema and pandas metadata, so it reads back as the frame `save_parquet` would have written."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one line to an append-only log; a single small O_APPEND write is never interleaved with another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row, default=str, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def save_quarantine(quarantine_dir: Path, batch_id: str, report: StageReport) -> Path:
    """One JSONL file per batch and stage; re-running a stage replaces its file, so nothing is counted twice."""
    path = quarantine_dir / batch_id / f"{report.stage}.jsonl"
    save_jsonl(path, (asdict(replace(record, batch_id=batch_id)) for record in report.quarantined))
    return path


def load_quarantine(quarantine_dir: Path, batch_id: str | None = None) -> list[QuarantineRecord]:
    """Quarantine records of one batch or of all, each with its batch_id; folders named `_…` or `.…` are not batches."""
    pattern = f"{batch_id}/*.jsonl" if batch_id else "*/*.jsonl"
    records: list[QuarantineRecord] = []
    for path in sorted(quarantine_dir.glob(pattern)):
        if path.parent.name.startswith(("_", ".")) or path.name.startswith(("_", ".")):
            continue
        records.extend(QuarantineRecord(**{**row, "batch_id": path.parent.name}) for row in load_jsonl(path))
    return records


def load_reference_rows(lake_raw: Path, lake_clean: Path, quarantine_dir: Path, batch_id: str, batches: int) -> pd.DataFrame | None:
    """Clean rows of the latest `batches` earlier batches that passed validation, minus the rows it quarantined.

    A batch counts as accepted when its `validate.jsonl` quarantine file exists (written, empty or
    not, only after validation returned).
    """
    from features.clean import ROWS_NAME
    from features.ingest import list_ingested_batches

    accepted = [b for b in list_ingested_batches(lake_raw)
                if b != batch_id and (quarantine_dir / b / "validate.jsonl").exists() and (lake_clean / b / ROWS_NAME).exists()]
    frames = []
    for b in accepted[-batches:]:
        rows = pd.read_parquet(lake_clean / b / ROWS_NAME)
        dropped = {r["sample_id"] for r in load_jsonl(quarantine_dir / b / "validate.jsonl")}
        frames.append(rows[~rows["sample_id"].isin(dropped)].assign(batch_id=b))
    return pd.concat(frames, ignore_index=True) if frames else None
