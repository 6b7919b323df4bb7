"""Reading the quarantine, and re-admitting a fixed row as a new landing batch.

Layout under the quarantine folder: `<batch_id>/<stage>.jsonl` (written by the stages, one record
per rejected row) and `readmitted.jsonl`, an append-only log of re-admissions. Re-admission never
edits the lake or a quarantine file: it writes a one-row landing batch that goes through ingest,
clean and validation like any other, as new content with its own batch id, carrying
`readmitted_from` (the original batch id) for lineage.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from features.atomic import atomic_copy, staged_directory
from features.clean import output_stem
from features.ingest import DONE_NAME, ROWS_NAME
from features.io import append_jsonl, load_jsonl, load_quarantine, save_jsonl
from features.manifest import FILE_FIELDS, MANIFEST_NAME, resolve_inside
from features.records import QuarantineRecord

READMITTED_NAME = "readmitted.jsonl"
READMIT_FOLDER = "_readmit"  # default home of re-admission landing batches; `_` keeps it out of the batch listing
STAGE_ORDER = ("ingest", "clean", "validate")  # stages in pipeline order; any other sorts after them
LIST_COLUMNS = ("batch_id", "stage", "sample_id", "reason", "detail", "status", "readmitted_to")


def _stage_rank(record: QuarantineRecord) -> int:
    return STAGE_ORDER.index(record.stage) if record.stage in STAGE_ORDER else len(STAGE_ORDER)


def _load_records(quarantine_dir: Path, batch_id: str | None = None) -> list[QuarantineRecord]:
    records = load_quarantine(quarantine_dir, batch_id) if quarantine_dir.is_dir() else []
    return sorted(records, key=lambda r: (r.batch_id or "", _stage_rank(r)))  # stable: file order within a stage


def _load_readmissions(quarantine_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(batch_id, sample_id) → the log entry of its re-admission."""
    path = quarantine_dir / READMITTED_NAME
    entries = load_jsonl(path) if path.is_file() else []
    return {(entry["batch_id"], entry["sample_id"]): entry for entry in entries}


def list_quarantine(quarantine_dir: Path) -> pd.DataFrame:
    """Every quarantined row, one line per record, with `status` "quarantined" or "readmitted"."""
    readmitted = _load_readmissions(quarantine_dir)
    lines = []
    for record in _load_records(quarantine_dir):
        entry = readmitted.get((record.batch_id or "", record.sample_id or ""))
        lines.append({
            "batch_id": record.batch_id, "stage": record.stage, "sample_id": record.sample_id,
            "reason": record.reason, "detail": record.detail,
            "status": "readmitted" if entry else "quarantined",
            "readmitted_to": entry["landing"] if entry else None,
        })
    return pd.DataFrame(lines, columns=list(LIST_COLUMNS))


def show_quarantined(quarantine_dir: Path, sample_id: str, batch_id: str | None = None) -> list[QuarantineRecord]:
    """Every record of `sample_id` (in one batch, or all), with the row as it arrived; [] when there is none."""
    return [r for r in _load_records(quarantine_dir, batch_id) if r.sample_id == sample_id]


def _original_row(records: list[QuarantineRecord], lake_batch: Path, sample_id: str) -> dict[str, Any]:
    """The row as the rejecting stage saw it; validation keeps only the id, so then the lake's row."""
    for record in records:
        if set(record.row) - {"sample_id"}:
            return dict(record.row)
    rows_path = lake_batch / ROWS_NAME
    for row in load_jsonl(rows_path) if rows_path.is_file() else []:
        if row.get("sample_id") == sample_id:
            return dict(row)
    raise ValueError(f"the original row of {sample_id!r} is neither in its quarantine record nor in {rows_path}")


def _landing_source(lake_batch: Path) -> Path | None:
    """The landing folder the batch was ingested from, if it is still there."""
    done = lake_batch / DONE_NAME
    source = json.loads(done.read_text(encoding="utf-8")).get("source") if done.is_file() else None
    return Path(source) if source and Path(source).is_dir() else None


def _find_original_file(row: dict[str, Any], field: str, lake_batch: Path, sample_id: str) -> Path:
    """The row's `field` file: the lake's copy, else the original landing batch's (still checked to stay inside)."""
    problems = []
    for folder in (lake_batch, _landing_source(lake_batch)):
        if folder is None:
            continue
        try:
            path = resolve_inside(folder, row[field])
        except ValueError as err:
            problems.append(str(err))
            continue
        if path.is_file():
            return path
    why = f" ({'; '.join(problems)})" if problems else ""
    raise ValueError(
        f"{field} file {row[field]!r} of {sample_id!r} is in neither the lake nor its landing batch{why};"
        f" pass fixed_files={{{field!r}: <path of a fixed file>}}, or fixed_fields={{{field!r}: None}} to drop it"
    )


def readmit(
    quarantine_dir: Path,
    lake_raw: Path,
    batch_id: str,
    sample_id: str,
    fixed_files: dict[str, Path] | None = None,
    fixed_fields: dict[str, Any] | None = None,
    out_dir: Path | None = None,
) -> Path:
    """Write a one-row landing batch holding the fixed row and its files; return its folder.

    `fixed_fields` replace fields of the original row (None removes the field); `fixed_files`
    replace files, by field name ("image", "audio", ...). Files not replaced are copied from the
    lake (or the original landing batch). The new batch goes through the normal pipeline
    (`ingest_batch` or `flywheel run --source <folder>`); the row carries `readmitted_from`.
    The default folder is `<quarantine_dir>/_readmit/<batch_id>-<sample>-<time>`; `out_dir` must not
    hold a manifest yet. The quarantine record is then marked readmitted; a second readmission of
    the same record raises ValueError.
    """
    fixed_files, fixed_fields = dict(fixed_files or {}), dict(fixed_fields or {})
    unknown = sorted(set(fixed_files) - set(FILE_FIELDS))
    if unknown:
        raise ValueError(f"fixed_files names {unknown}; accepted file fields: {list(FILE_FIELDS)}")
    records = show_quarantined(quarantine_dir, sample_id, batch_id)
    if not records:
        known = sorted({r.sample_id for r in _load_records(quarantine_dir, batch_id) if r.sample_id})
        raise ValueError(f"no quarantined row {sample_id!r} in batch {batch_id!r}; quarantined there: {known[:20]}")
    previous = _load_readmissions(quarantine_dir).get((batch_id, sample_id))
    if previous:
        raise ValueError(f"{sample_id!r} of batch {batch_id!r} was already re-admitted as {previous['landing']}")

    lake_batch = lake_raw / batch_id
    row = {k: v for k, v in _original_row(records, lake_batch, sample_id).items() if not k.endswith("_sha256")}
    row.update(fixed_fields)
    row = {k: v for k, v in row.items() if v is not None}
    row["readmitted_from"] = batch_id
    sources: dict[str, Path] = {}
    for field in FILE_FIELDS:
        if field in fixed_files:
            sources[field] = Path(fixed_files[field])
            if not sources[field].is_file():
                raise ValueError(f"fixed file for {field}, {str(sources[field])!r}, is not a file")
        elif row.get(field):
            sources[field] = _find_original_file(row, field, lake_batch, sample_id)

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    out = out_dir or quarantine_dir / READMIT_FOLDER / f"{batch_id}-{output_stem(sample_id)}-{stamp}"
    if (out / MANIFEST_NAME).exists():
        raise FileExistsError(f"{out} already holds a landing batch ({MANIFEST_NAME}); choose an empty folder")
    # Our own folder is built in a staging sibling and published whole (a kill leaves none, swept later); in a
    # folder the user named, the manifest is written last, so a killed readmission is simply repeated there.
    with staged_directory(out) if out_dir is None else nullcontext(out) as target:
        for field, source in sources.items():
            relative = f"{field}/{output_stem(sample_id)}{source.suffix.lower()}"
            (target / field).mkdir(parents=True, exist_ok=True)
            atomic_copy(source, target / relative)
            row[field] = relative
        save_jsonl(target / MANIFEST_NAME, [row])  # written last: a folder with a manifest holds a complete batch
    append_jsonl(quarantine_dir / READMITTED_NAME, {
        "batch_id": batch_id, "sample_id": sample_id, "landing": str(out),
        "fixed_fields": sorted(fixed_fields), "fixed_files": sorted(fixed_files),
        "at": datetime.now(timezone.utc).isoformat(),
    })
    return out
