"""The inference log: one JSON line per scored item (API request or batch row), read by monitoring.

Files are `<folder>/<YYYY-MM-DD>/<source>-<pid>.jsonl`: one writer per file, so the API process and
a batch scoring run never interleave lines. A write is a lock and one buffered line (flushed, not
fsynced), a few microseconds on the request path.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

# Fields every record carries (others depend on the modality and the endpoint); None where not applicable.
RECORD_FIELDS: tuple[str, ...] = ("timestamp", "source", "endpoint", "status", "error", "model_name", "model_version",
                                  "modality", "latency_ms")


class InferenceLog:
    """Append-only JSON-lines writer, safe to call from the server's worker threads."""

    def __init__(self, folder: Path, source: str) -> None:
        self.folder = folder
        self.source = source  # "api" or "batch": part of the file name and of every record
        self._lock = threading.Lock()
        self._day: str | None = None
        self._handle: TextIO | None = None

    def _file_for(self, day: str) -> TextIO:
        if self._day != day or self._handle is None:
            if self._handle is not None:
                self._handle.close()
            path = self.folder / day / f"{self.source}-{os.getpid()}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle, self._day = path.open("a", encoding="utf-8"), day
        return self._handle

    def write(self, record: dict[str, Any]) -> None:
        now = datetime.now(timezone.utc)
        line = json.dumps({**dict.fromkeys(RECORD_FIELDS), "timestamp": now.isoformat(), "source": self.source, **record},
                          default=_jsonable)
        with self._lock:
            handle = self._file_for(now.strftime("%Y-%m-%d"))
            handle.write(line + "\n")
            handle.flush()

    def write_many(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
            self._handle = None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def load_inference_log(folder: Path, since: float | None = None) -> pd.DataFrame:
    """Every record under `folder` as a frame (one row per scored item), oldest first; `since` a unix time."""
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*/*.jsonl")) if folder.exists() else []:
        with path.open(encoding="utf-8") as handle:
            rows.extend(json.loads(line) for line in handle if line.strip())
    frame = pd.DataFrame(rows, columns=None if rows else list(RECORD_FIELDS))
    if frame.empty:
        return frame
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    if since is not None:
        frame = frame[frame["timestamp"] >= pd.Timestamp(since, unit="s", tz="UTC")]
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
