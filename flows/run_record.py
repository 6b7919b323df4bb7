"""The run summary as it fills up (`runs/<run_id>/summary.json`), and the small helpers every step uses to keep it."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from features.io import save_json, save_quarantine
from features.manifest import reads_as_time
from features.records import StageReport


@dataclass
class RunRecord:
    """The run summary as it fills up; written to `runs/<run_id>/summary.json`."""

    run_id: str
    source: str
    command: str = "run"  # what started it and resumes it: `flywheel run` (the lifecycle), `flywheel ingest` (data only), `stage:NAME`
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    status: str = "running"
    batch_id: str | None = None
    data_versions: dict[str, str] = field(default_factory=dict)  # raw/clean/inputs/features → DVC path@md5
    stages: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    monitor: dict[str, Any] = field(default_factory=dict)
    loop: dict[str, Any] = field(default_factory=dict)  # alerts sent, drift event or retraining started
    rejection: dict[str, Any] = field(default_factory=dict)  # a data stage refused the batch: stage, expectation, observed, bound
    seconds: dict[str, float] = field(default_factory=dict)
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)  # per stage: key, cached (reused), computed_by
    links: dict[str, str] = field(default_factory=dict)  # the driver's pages of this run: prefect_flow_run → URL
    attempts: int = 1  # 1 + the times it was resumed (`flywheel run --resume`)
    error: str | None = None
    failed_stage: str | None = None
    finished_at: str | None = None


def new_run_id() -> str:
    """`<UTC time>-<6 hex characters>`, drawn again while dateutil reads it as a time: GX parses the run name it is
    given (the run id, features/validate.py) for a time when it renders Data Docs, and an id such as
    "20261206T093518-3388ad" reads as one with a UTC offset of 33:88 hours, which fails the validate stage
    (about 1 id in 2,000)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    while reads_as_time(run_id := f"{stamp}-{uuid.uuid4().hex[:6]}"):
        pass
    return run_id


def write_summary(runs: Path, record: RunRecord) -> Path:
    path = runs / record.run_id / "summary.json"
    save_json(path, asdict(record))
    return path


def record_report(quarantine: Path, record: RunRecord, report: StageReport) -> None:
    """A data stage's report: its rejected rows to the batch's quarantine, its counts to the summary."""
    save_quarantine(quarantine, record.batch_id or "unknown", report)
    record.stages[report.stage] = report.to_summary()
