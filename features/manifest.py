"""The landing-batch manifest: one JSON object per line naming files by path relative to the batch.

Parsing is pure: it takes the manifest bytes and the batch folder and returns accepted rows
plus quarantine records, each with a reason code. Lines are split and decoded one at a time,
so one undecodable or malformed line costs that line only.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from features.records import QuarantineRecord

MANIFEST_NAME = "manifest.jsonl"
REQUIRED_FIELDS: tuple[str, ...] = ("sample_id", "captured_at")
FILE_FIELDS: tuple[str, ...] = ("image", "audio", "depth", "thermal", "imu")
# Inside the nanosecond range that pandas and parquet timestamp columns hold (1677-09-22 .. 2262-04-11),
# with a margin so that no UTC offset can push a timestamp out of it.
EARLIEST_TIMESTAMP = datetime(1678, 1, 1, tzinfo=timezone.utc)
LATEST_TIMESTAMP = datetime(2262, 1, 1, tzinfo=timezone.utc)
_QUOTED_TEXT_CHARS = 500  # how much of an unreadable line a quarantine record keeps
# A line and its end (\r\n, \r or \n, as bytes.splitlines), or a last line without one.
_LINE = re.compile(rb"([^\r\n]*)(?:\r\n|\r|\n)|([^\r\n]+)\Z")


def reads_as_time(text: str) -> bool:
    """Whether dateutil's parser finds a time in `text`, or one with a field out of range (it raises then). GX reads
    its run names so (features/validate.py), and fails on such times: "…-3388ad" has a UTC offset of 33:88
    hours, an all-numeric batch id overflows."""
    from dateutil.parser import ParserError, parse

    try:
        parse(text)
    except ParserError:  # no time in it
        return False
    except (ValueError, OverflowError):  # a time, with a field out of range
        return True
    return True


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 → aware datetime; a naive timestamp is taken as UTC."""
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 string, got {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    if not EARLIEST_TIMESTAMP <= parsed < LATEST_TIMESTAMP:
        raise ValueError(
            f"{value!r} is outside the accepted range {EARLIEST_TIMESTAMP:%Y-%m-%d} .. {LATEST_TIMESTAMP:%Y-%m-%d}"
        )
    return parsed


def resolve_inside(batch_dir: Path, relative: Any, real_dirs: dict[str, str] | None = None) -> Path:
    """The file a manifest path names, refusing anything that escapes the batch folder (symlinks followed)."""
    return Path(resolved_inside(batch_dir, relative, real_dirs))


def resolved_inside(batch_dir: Path | str, relative: Any, real_dirs: dict[str, str] | None = None) -> str:
    """`resolve_inside` as a string: for the passes that resolve every file of a batch.

    On Python 3.11 a `Path` interns each part of its path, and the interpreter's table of interned strings
    never shrinks: a Path per file left about 10 MB at 100k rows (two files a row) in every later stage.

    `real_dirs`: a cache of resolved folders that a caller resolving many paths of one batch in one pass
    passes to each call (it costs a walk of the whole path per file otherwise); a folder is resolved once
    per pass, the file's own name on each call.
    """
    if not isinstance(relative, str) or not relative:
        raise ValueError(f"expected a relative path string, got {relative!r}")
    if relative.startswith("/"):
        raise ValueError(f"absolute path {relative!r} is not allowed; paths are relative to the batch folder")
    parts = [part for part in relative.split("/") if part not in ("", ".")]  # as pathlib splits a POSIX path
    cache = {} if real_dirs is None else real_dirs
    try:
        root = _real_dir(cache, str(batch_dir))
        if not parts or ".." in parts:  # walks up: resolved whole
            resolved = os.path.realpath(os.path.join(root, *parts), strict=False)
        else:
            parent = _real_dir(cache, os.path.join(root, *parts[:-1]))
            resolved = os.path.join(parent, parts[-1])
            if os.path.islink(resolved):
                resolved = os.path.realpath(resolved)
        _refuse_symlink_loop(resolved)
    except (OSError, RuntimeError, ValueError) as err:  # symlink loop, NUL byte
        raise ValueError(f"path {relative!r} cannot be resolved: {err}") from err
    if resolved != root and not resolved.startswith(root.rstrip(os.sep) + os.sep):
        raise ValueError(f"path {relative!r} escapes the batch folder")
    return resolved


def _refuse_symlink_loop(path: str) -> None:
    """What pathlib's resolve refuses besides realpath: a NUL byte, and a path that is a symlink loop (a missing
    file is clean's to report as missing_file; where it would be must still be inside)."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise RuntimeError(f"symlink loop from {path!r}") from err


def _real_dir(cache: dict[str, str], path: str) -> str:
    real = cache.get(path)
    if real is None:
        real = cache[path] = os.path.realpath(path)
    return real


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; write null or a number")


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in pairs:
        if key in row:
            raise ValueError(f"key {key!r} appears twice; each key may appear once")
        row[key] = value
    return row


def _loads_strict(text: str) -> Any:
    """Standard JSON only: NaN, Infinity and repeated keys, which Python's json accepts, are refused."""
    return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_repeated_keys)


def _shown_id(sample_id: Any) -> str | None:
    """The sample_id a quarantine record can carry: a non-blank string or integer, else None."""
    if isinstance(sample_id, bool) or not isinstance(sample_id, (str, int)):
        return None
    return str(sample_id) if str(sample_id).strip() else None


def _check_row(row: Any, batch_dir: Path, line_no: int, stage: str,
               real_dirs: dict[str, str] | None = None, paths: dict[str, str] | None = None) -> QuarantineRecord | None:
    """Why the row is refused, or None; `paths` receives the file each file field resolves to."""
    if not isinstance(row, dict):
        return QuarantineRecord(
            None, stage, "bad_json", f"line {line_no}: expected a JSON object, got {type(row).__name__}", {"line": line_no}
        )
    sid = row.get("sample_id")
    for name in REQUIRED_FIELDS:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return QuarantineRecord(_shown_id(sid), stage, "missing_field", f"line {line_no}: {name!r} is required", row)
    if isinstance(sid, bool) or not isinstance(sid, (str, int)):
        return QuarantineRecord(
            None, stage, "bad_field", f"line {line_no}: sample_id must be a string or an integer, got {sid!r}", row
        )
    try:
        parse_timestamp(row["captured_at"])
    except ValueError as err:
        return QuarantineRecord(str(sid), stage, "bad_timestamp", f"line {line_no}: captured_at: {err}", row)
    for name in FILE_FIELDS:
        value = row.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            return QuarantineRecord(
                str(sid), stage, "bad_field", f"line {line_no}: {name} must be a relative path string, got {value!r}", row
            )
        try:
            resolved = resolved_inside(batch_dir, value, real_dirs)
        except ValueError as err:
            return QuarantineRecord(str(sid), stage, "unsafe_path", f"line {line_no}: {name}: {err}", row)
        if paths is not None:
            paths[name] = resolved
    return None


def _parse_line(raw: bytes, line_no: int, batch_dir: Path, stage: str, real_dirs: dict[str, str] | None = None,
                paths: dict[str, str] | None = None) -> dict[str, Any] | QuarantineRecord:
    """One manifest line → a well-formed row, or the record saying why it was refused."""
    quoted = {"line": line_no, "text": raw[:_QUOTED_TEXT_CHARS].decode("utf-8", "backslashreplace")}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = raw[err.start : err.start + 1]
        detail = f"line {line_no}: byte {err.start} ({bad!r}) is not valid UTF-8; manifests must be UTF-8"
        return QuarantineRecord(None, stage, "bad_encoding", detail, quoted)
    try:
        row = _loads_strict(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError; deep nesting recurses
        return QuarantineRecord(None, stage, "bad_json", f"line {line_no}: {type(err).__name__}: {err}", quoted)
    try:  # "\ud800" is valid JSON but no UTF-8 encoder (jsonl, parquet) can write it back
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        surrogate = err.object[err.start : err.end]
        detail = f"line {line_no}: a string holds {surrogate!r}, an unpaired surrogate that is not Unicode text"
        return QuarantineRecord(None, stage, "bad_encoding", detail, quoted)
    problem = _check_row(row, batch_dir, line_no, stage, real_dirs, paths)
    if problem:
        return problem
    row["sample_id"] = str(row["sample_id"])
    for name in FILE_FIELDS:
        if row.get(name) == "":
            row[name] = None  # an empty path means "no such modality", as in CSV exports
    return row


def iter_manifest_lines(data: bytes | str, first_line: int = 1) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers, one at a time; split on bytes, so U+2028 inside a
    caption splits nothing. Nothing but the current line is copied, however long the manifest.
    `first_line`: the number of the first line of `data`, a run of lines cut from a manifest at a line end
    (`split_manifest`); only the manifest's start may carry a byte-order mark."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    start = len(codecs.BOM_UTF8) if first_line == 1 and raw.startswith(codecs.BOM_UTF8) else 0
    for number, match in enumerate(_LINE.finditer(raw, start), start=first_line):
        line = match.group(1) if match.group(1) is not None else match.group(2)
        if line.strip():
            yield number, line


def manifest_lines(data: bytes | str) -> list[tuple[int, bytes]]:
    return list(iter_manifest_lines(data))


def split_manifest(data: bytes, lines: int) -> Iterator[tuple[int, bytes]]:
    """The manifest cut at line ends into runs of `lines` lines (blank ones included), each with the number of
    its first line: parsed one by one with `iter_manifest_lines(text, first_line)`, they give the lines the
    whole manifest gives, with the same numbers. One run is copied at a time."""
    start, first, count = 0, 1, 0
    for match in _LINE.finditer(data):
        count += 1
        if count == lines:
            yield first, data[start:match.end()]
            start, first, count = match.end(), first + lines, 0
    if start < len(data):
        yield first, data[start:]


def iter_manifest(data: bytes | str, batch_dir: Path, stage: str = "ingest") -> Iterator[dict[str, Any] | QuarantineRecord]:
    """Each non-blank line as a well-formed row or the record saying why it was refused, in manifest order."""
    for outcome, _ in iter_manifest_with_paths(data, batch_dir, stage):
        yield outcome


def iter_manifest_with_paths(data: bytes | str, batch_dir: Path, stage: str = "ingest", first_line: int = 1) -> Iterator[
        tuple[dict[str, Any] | QuarantineRecord, dict[str, str]]]:
    """`iter_manifest`, each row with the files its file fields resolve to (as `resolved_inside` gives them,
    checked inside the batch), so a caller that opens them does not resolve them again; {} for a record.
    `first_line`: as in `iter_manifest_lines`, for a run of the manifest's lines."""
    real_dirs: dict[str, str] = {}  # the batch's folders, resolved once for this pass
    for line_no, line in iter_manifest_lines(data, first_line):
        paths: dict[str, str] = {}
        outcome = _parse_line(line, line_no, batch_dir, stage, real_dirs, paths)
        yield outcome, ({} if isinstance(outcome, QuarantineRecord) else paths)


def parse_manifest(
    data: bytes | str, batch_dir: Path, stage: str = "ingest"
) -> tuple[list[dict[str, Any]], list[QuarantineRecord]]:
    """Split manifest lines into well-formed rows and quarantined ones; blank lines are ignored.

    Every non-blank line ends up in exactly one of the two lists.
    """
    accepted: list[dict[str, Any]] = []
    rejected: list[QuarantineRecord] = []
    for outcome in iter_manifest(data, batch_dir, stage):
        (rejected if isinstance(outcome, QuarantineRecord) else accepted).append(outcome)
    return accepted, rejected
