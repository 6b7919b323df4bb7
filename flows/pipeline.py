"""The one place that wires the lifecycle's stages together, and the run summary it fills.

The stages are plain functions (`flows/data_stages.py`, `flows/model_stages.py`).
`run_stages` takes a `call(name, fn, *args)` hook: the Prefect flow passes one that runs
each stage as a task (or subflow); `flywheel run --plain` and the benchmarks call them
directly. Nothing here imports Prefect, so the wiring is written once for both drivers.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from features.io import save_json, save_quarantine
from features.records import StageReport
from flows.data_stages import (
    stage_clean,
    stage_data_versions,
    stage_ingest,
    stage_label,
    stage_transform,
    stage_validate,
    stage_version_data,
)
from flows.model_stages import stage_gate, stage_monitor, stage_register, stage_train
from flows.settings import Settings

StageCall = Callable[..., Any]


def call_directly(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


@dataclass
class RunRecord:
    """The run summary as it fills up; written to `runs/<run_id>/summary.json`."""

    run_id: str
    source: str
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
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    failed_stage: str | None = None
    finished_at: str | None = None


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _record_report(settings: Settings, record: RunRecord, report: StageReport) -> None:
    save_quarantine(settings.paths.quarantine, record.batch_id or "unknown", report)
    record.stages[report.stage] = report.to_summary()


# ---- the wiring, written once for both drivers -------------------------------------------


def write_summary(settings: Settings, record: RunRecord) -> Path:
    path = settings.paths.runs / record.run_id / "summary.json"
    save_json(path, asdict(record))
    return path


def _timer(record: RunRecord, call: StageCall) -> Callable[..., Any]:
    """`call` that records each stage's seconds, and its name when it fails."""

    def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(name, fn, *args)
        except BaseException:
            record.failed_stage = name
            raise
        finally:
            record.seconds[name] = round(time.perf_counter() - started, 3)

    return timed


@contextmanager
def _recorded(settings: Settings, record: RunRecord) -> Iterator[None]:
    """The summary is written whatever happens; a failing stage marks the run failed and re-raises."""
    (settings.paths.runs / record.run_id).mkdir(parents=True, exist_ok=True)
    try:
        yield
        record.status = "succeeded"
    except BaseException as err:
        record.status = "failed"
        record.error = f"{type(err).__name__}: {err}"
        raise
    finally:
        record.finished_at = datetime.now(timezone.utc).isoformat()
        write_summary(settings, record)


def _data_stages(settings: Settings, source: Path | str, record: RunRecord, timed: StageCall) -> dict[str, Any]:
    """Ingest → clean → validate → transform → label → version; returns the validation statistics."""
    ingest = timed("ingest", stage_ingest, settings, source)
    record.batch_id = ingest.batch_id
    _record_report(settings, record, ingest.report)
    clean = timed("clean", stage_clean, settings, ingest.batch_dir)
    _record_report(settings, record, clean.report)
    accepted, report, statistics = timed("validate", stage_validate, settings, ingest.batch_id, clean.rows)
    _record_report(settings, record, report)
    record.stages["validate"]["expectations"] = statistics
    transformed, report = timed("transform", stage_transform, settings, ingest.batch_id, clean.batch_dir, accepted)
    _record_report(settings, record, report)
    _record_report(settings, record, timed("label", stage_label, settings, ingest.batch_id, transformed, clean.batch_dir))
    record.data_versions = timed("version", stage_version_data, settings, ingest.batch_id)
    return statistics


def _model_stages(settings: Settings, record: RunRecord, timed: StageCall, label_metrics: dict[str, float] | None,
                  lineage: dict[str, str]) -> None:
    """Train on the current window → register → gate (promotes the candidate only if it passes)."""
    train = timed("train", stage_train, settings, record.run_id, label_metrics, record.data_versions.get("inputs"))
    record.train = asdict(train)
    lineage = {"data_version": record.data_versions["inputs"],
               **{f"data.{name}": tag for name, tag in record.data_versions.items()},
               "flow_run": record.run_id, "feature_service": "training", **lineage}
    version = timed("register", stage_register, settings, train, lineage)
    record.model = {"name": settings.params.registry.model_name, "version": version}
    decision = timed("gate", stage_gate, settings, version, record.run_id)
    record.gate = decision.to_dict()
    record.model["champion"] = decision.lineage.get("champion_after")


def _monitor_and_react(settings: Settings, record: RunRecord, timed: StageCall, react: StageCall | None) -> None:
    """Drift of the batch against the champion's window, then the loop's reaction (alerts, retraining)."""
    record.monitor = timed("monitor", stage_monitor, settings, record.batch_id, settings.paths.runs / record.run_id)
    if react is not None:
        record.loop = timed("react", react, settings, record)


def run_stages(settings: Settings, source: Path | str, call: StageCall = call_directly, run_id: str | None = None,
               react: StageCall | None = None) -> RunRecord:
    """The lifecycle on one landing batch: data stages, train, register, gate, monitor, and `react`
    (`flows.loop`: alerts and retraining on drift) when given.

    The summary is written whatever happens; a failing stage marks the run failed and re-raises.
    """
    record = RunRecord(run_id=run_id or new_run_id(), source=str(source))
    timed = _timer(record, call)
    with _recorded(settings, record):
        statistics = _data_stages(settings, source, record, timed)
        _model_stages(settings, record, timed, record.stages["label"].get("metrics"),
                      {"batch": record.batch_id or "", "validation": json.dumps(statistics, default=str)[:5000]})
        _monitor_and_react(settings, record, timed, react)
    return record


def run_ingest_stages(settings: Settings, source: Path | str, call: StageCall = call_directly, run_id: str | None = None,
                      react: StageCall | None = None) -> RunRecord:
    """A new landing batch into the lake and the feature store, then its drift check; no training."""
    record = RunRecord(run_id=run_id or new_run_id(), source=str(source))
    timed = _timer(record, call)
    with _recorded(settings, record):
        _data_stages(settings, source, record, timed)
        _monitor_and_react(settings, record, timed, react)
    return record


def run_monitor_stages(settings: Settings, batch_id: str, call: StageCall = call_directly, run_id: str | None = None,
                       react: StageCall | None = None) -> RunRecord:
    """The drift check of an ingested batch on its own (the hourly schedule), then `react`."""
    record = RunRecord(run_id=run_id or new_run_id(), source=f"monitor: {batch_id}", batch_id=batch_id)
    timed = _timer(record, call)
    with _recorded(settings, record):
        _monitor_and_react(settings, record, timed, react)
    return record


def run_retrain_stages(settings: Settings, reason: str, call: StageCall = call_directly,
                       run_id: str | None = None) -> RunRecord:
    """Retraining: train on the current window (every accepted batch), register, gate; no new data."""
    record = RunRecord(run_id=run_id or new_run_id(), source=f"retrain: {reason}")
    timed = _timer(record, call)
    with _recorded(settings, record):
        record.data_versions = timed("version", stage_data_versions, settings)
        _model_stages(settings, record, timed, None, {"trigger": reason[:500]})
    return record
