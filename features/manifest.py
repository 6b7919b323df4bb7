"""The landing-batch manifest: one JSON object per line naming files by path relative to the batch.

Parsing is pure: it takes the manifest text and the batch folder and returns accepted rows
plus quarantine records, each with a reason code.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from features.records import QuarantineRecord

MANIFEST_NAME = "manifest.jsonl"
REQUIRED_FIELDS: tuple[str, ...] = ("sample_id", "captured_at")
FILE_FIELDS: tuple[str, ...] = ("image", "audio", "depth", "thermal", "imu")


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 → aware UTC datetime; a naive timestamp is taken as UTC."""
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 string, got {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def resolve_inside(batch_dir: Path, relative: Any) -> Path:
    """The file a manifest path names, refusing anything that escapes the batch folder."""
    if not isinstance(relative, str) or not relative:
        raise ValueError(f"expected a relative path string, got {relative!r}")
    candidate = Path(relative)
    if candidate.is_absolute():
        raise ValueError(f"absolute path {relative!r} is not allowed; paths are relative to the batch folder")
    root = batch_dir.resolve()
    resolved = (root / candidate).resolve()  # follows symlinks, so a link pointing out is caught too
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"path {relative!r} escapes the batch folder")
    return resolved


def _check_row(row: Any, batch_dir: Path, line_no: int, stage: str) -> QuarantineRecord | None:
    if not isinstance(row, dict):
        return QuarantineRecord(None, stage, "bad_json", f"line {line_no}: not a JSON object", {"line": line_no})
    sid = row.get("sample_id")
    for name in REQUIRED_FIELDS:
        if row.get(name) in (None, ""):
            return QuarantineRecord(
                str(sid) if sid else None, stage, "missing_field", f"line {line_no}: {name!r} is required", row
            )
    try:
        parse_timestamp(row["captured_at"])
    except ValueError as err:
        return QuarantineRecord(str(sid), stage, "bad_timestamp", f"line {line_no}: captured_at: {err}", row)
    for name in FILE_FIELDS:
        if row.get(name) is None:
            continue
        try:
            resolve_inside(batch_dir, row[name])
        except ValueError as err:
            return QuarantineRecord(str(sid), stage, "unsafe_path", f"line {line_no}: {name}: {err}", row)
    return None


def parse_manifest(text: str, batch_dir: Path, stage: str = "ingest") -> tuple[list[dict[str, Any]], list[QuarantineRecord]]:
    """Split manifest lines into well-formed rows and quarantined ones; blank lines are ignored."""
    accepted: list[dict[str, Any]] = []
    rejected: list[QuarantineRecord] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            rejected.append(QuarantineRecord(None, stage, "bad_json", f"line {line_no}: {err}", {"line": line_no, "text": line[:500]}))
            continue
        problem = _check_row(row, batch_dir, line_no, stage)
        if problem:
            rejected.append(problem)
        else:
            row["sample_id"] = str(row["sample_id"])
            accepted.append(row)
    return accepted, rejected


def count_manifest_rows(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())
