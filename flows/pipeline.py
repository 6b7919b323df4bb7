"""The one place that wires the lifecycle's stages together, and the run summary it fills.

The stages are plain functions (`flows/data_stages.py`, `flows/model_stages.py`).
`run_stages` takes a `call(name, fn, *args)` hook: the Prefect flow passes one that runs
each stage as a task (or subflow); `flywheel run --plain` and the benchmarks call them
directly. Nothing here imports Prefect, so the wiring is written once for both drivers.

Each stage runs through `flows.stage_cache.StageRunner`: keyed by its inputs, recorded when
done, reused (re-loaded, not recomputed) when its record exists, so a re-run or `--resume` of
a killed run continues from the first stage without a record. The summary is rewritten after
every stage, so a killed run leaves one saying how far it got (status "running").

A batch that a data stage after clean refuses as a whole (`BatchRejected`: validation's reference
bounds, too many bad rows) is still monitored, as cleaned, against the champion's window in the same
run, and the reaction alerts on the rejection itself; then the run fails at that stage as before.
The batch never reaches the feature store or the model inputs, so no training ever sees it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from features.expectations import BatchRejected
from features.io import save_json, save_quarantine
from features.locks import batch_lock
from features.records import StageReport
from flows.data_stages import (
    load_clean_rows,
    stage_clean,
    stage_data_versions,
    stage_ingest,
    stage_label,
    stage_transform,
    stage_validate,
    stage_version_data,
    without_quarantined,
)
from flows.exactly_once import close_abandoned_training_runs, gate_once, register_once, training_start
from flows.model_stages import TrainOutcome, golden_name, stage_gate, stage_monitor, stage_register, stage_train
from flows.registry_locks import check_registry_lock
from flows.settings import Settings
from flows.stage_cache import StageRunner, StageStore, fault_point

log = logging.getLogger(__name__)

StageCall = Callable[..., Any]
# Data stages that may refuse a whole batch once its clean rows exist: monitoring can still read the batch.
REJECTING_STAGES = ("validate", "transform", "label")
STAGES_DIR = "state/stages"  # one record per completed stage, under FLYWHEEL_HOME (flows/stage_cache.py)
CHECKPOINTS_DIR = "state/checkpoints"  # training checkpoints per train key, removed once the model is registered


def call_directly(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


@dataclass
class RunRecord:
    """The run summary as it fills up; written to `runs/<run_id>/summary.json`."""

    run_id: str
    source: str
    command: str = "run"  # what started it and resumes it: `flywheel run` (the lifecycle) or `flywheel ingest` (data only)
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
    attempts: int = 1  # 1 + the times it was resumed (`flywheel run --resume`)
    error: str | None = None
    failed_stage: str | None = None
    finished_at: str | None = None


class NotResumable(ValueError):
    """`--resume` named a run that does not exist, succeeded already or is not a lifecycle run."""


def load_resumable(settings: Settings, run_id: str, command: str = "run") -> dict[str, Any]:
    """The summary of a failed or killed run of `command` ("run": the lifecycle, "ingest": the data stages);
    NotResumable says why another one is not (resuming a data-only run as a lifecycle would train)."""
    path = settings.paths.runs / run_id / "summary.json"
    if not path.is_file():
        known = sorted(p.parent.name for p in settings.paths.runs.glob("*/summary.json")) if settings.paths.runs.exists() else []
        raise NotResumable(f"no run {run_id!r} under {settings.paths.runs}; known runs: {', '.join(known[-5:]) or 'none'}")
    summary = json.loads(path.read_text())
    if summary.get("status") == "succeeded":
        raise NotResumable(f"run {run_id} succeeded already (finished {summary.get('finished_at')}): nothing to resume; "
                           "`flywheel run --source` on its batch reuses its recorded stages, `--no-cache` recomputes them")
    if summary["source"].startswith(("retrain:", "monitor:")):
        raise NotResumable(f"run {run_id} is a {summary['source'].split(':')[0]} run; only lifecycle runs "
                           "(`flywheel run`) resume: start `flywheel {summary['source'].split(':')[0]}` again")
    started_by = summary.get("command", "run")
    if started_by != command:
        raise NotResumable(f"run {run_id} was started by `flywheel {started_by}`: resume it with "
                           f"`flywheel {started_by} --resume {run_id}`")
    return summary


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


def _sweep_run_folders(settings: Settings) -> None:
    """What killed runs left in their run folders (a summary mid-rewrite): a plain re-run writes under a new
    run id and never writes into a killed run's folder again."""
    from features.atomic import remove_orphans

    if settings.paths.runs.is_dir():
        for folder in settings.paths.runs.iterdir():
            remove_orphans(folder)


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
    """The summary is written at once and whatever happens; a failing stage marks the run failed and re-raises.

    A run id that has a summary already is a resumed run: it keeps its start time and counts the attempt.
    """
    _sweep_run_folders(settings)
    previous = settings.paths.runs / record.run_id / "summary.json"
    if previous.is_file():
        earlier = json.loads(previous.read_text())
        record.started_at, record.attempts = earlier["started_at"], earlier.get("attempts", 1) + 1
    write_summary(settings, record)
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


def _runner(settings: Settings, record: RunRecord, timed: StageCall, reuse: bool) -> StageRunner:
    params = settings.params.model_dump(mode="json", by_alias=True)
    return StageRunner(StageStore(settings.paths.home / STAGES_DIR), params, record.run_id, timed, reuse, record.cache)


def _data_step(settings: Settings, record: RunRecord, runner: StageRunner, stage: str, key: str,
               compute: Callable[[], Any], restore: Callable[[], Any]) -> Any:
    """A data stage: its report goes to the quarantine and the summary when computed, its summary is reused."""

    def computed(_key: str) -> tuple[Any, dict[str, Any]]:
        value = compute()
        return value, {"summary": record.stages[stage]}

    value, outputs, cached = runner.run(stage, key, computed, lambda _outputs: restore())
    if cached:
        record.stages[stage] = {**outputs["summary"], "cached": True}
    write_summary(settings, record)
    return value


def _data_stages(settings: Settings, source: Path | str, record: RunRecord, timed: StageCall,
                 runner: StageRunner, held: ExitStack) -> tuple[dict[str, Any], str]:
    """Ingest → clean → validate → transform → label → version; returns the validation statistics and
    the key of the batch's transformed inputs (what monitoring reads). From ingest on, the batch's lock
    is in `held` until the run ends: another run of the same batch waits, then reuses this one's stages."""
    fault_point("ingest:before")
    started = time.perf_counter()
    ingest = timed("ingest", stage_ingest, settings, source)  # always runs: it skips a batch it holds
    batch = record.batch_id = ingest.batch_id
    held.enter_context(batch_lock(settings.paths.lake_raw, batch, record.run_id))
    _record_report(settings, record, ingest.report)
    key = runner.key("ingest", batch=batch)
    runner.note("ingest", key, {"batch_id": batch}, round(time.perf_counter() - started, 3), ingest.report.skipped)
    write_summary(settings, record)
    clean_dir, quarantine = settings.paths.lake_clean / batch, settings.paths.quarantine

    def clean() -> Any:
        result = timed("clean", stage_clean, settings, ingest.batch_dir)
        _record_report(settings, record, result.report)
        return result.rows

    key = runner.key("clean", [key])
    rows = _data_step(settings, record, runner, "clean", key, clean, lambda: load_clean_rows(clean_dir))

    def validate() -> Any:
        accepted, report, statistics = timed("validate", stage_validate, settings, batch, rows)
        _record_report(settings, record, report)
        record.stages["validate"]["expectations"] = statistics
        return accepted

    key = runner.key("validate", [key])
    accepted = _data_step(settings, record, runner, "validate", key, validate,
                          lambda: without_quarantined(rows, quarantine, batch, "validate"))

    def transform() -> Any:
        transformed, report = timed("transform", stage_transform, settings, batch, clean_dir, accepted)
        _record_report(settings, record, report)
        return transformed

    key = inputs_key = runner.key("transform", [key])
    transformed = _data_step(settings, record, runner, "transform", key, transform,
                             lambda: without_quarantined(accepted, quarantine, batch, "transform"))

    def label() -> None:
        _record_report(settings, record, timed("label", stage_label, settings, batch, transformed, clean_dir))

    key = runner.key("label", [key])
    _data_step(settings, record, runner, "label", key, label, lambda: None)
    _version_step(settings, record, timed, runner, key, stage_version_data, settings, batch)
    return record.stages["validate"]["expectations"], inputs_key


def _version_step(settings: Settings, record: RunRecord, timed: StageCall, runner: StageRunner, upstream: str,
                  versions: Callable[..., dict[str, str]], *args: Any) -> None:
    """DVC versions of what training reads. Always runs (DVC hashes content, so an unchanged folder costs
    a stat): its key is the versions themselves, i.e. the training window's content, labels included."""
    fault_point("version:before")
    started = time.perf_counter()
    record.data_versions = timed("version", versions, *args)
    key = runner.key("version", [upstream], data=record.data_versions)
    reused = runner.store.load(key) is not None
    runner.note("version", key, record.data_versions, round(time.perf_counter() - started, 3), reused)
    write_summary(settings, record)


def _model_stages(settings: Settings, record: RunRecord, timed: StageCall, runner: StageRunner,
                  label_metrics: dict[str, float] | None, lineage: dict[str, str]) -> str:
    """Train on the current window → register → gate (promotes the candidate only if it passes).

    Train is keyed by the lake's versions of its inputs (every accepted batch and the feature
    store's labels), register by train's key (a re-run never registers a second version), gate by
    register's key. Returns the gate's key.
    """
    # A LoRA fine-tune of the champion (train.imagebind_lora) also depends on which version it starts from
    # (not simply @champion: after this training was promoted, @champion is its own result).
    from flows.families import configured_family  # the family's own inputs to train's key (its code, its start)
    start = configured_family(settings).train_cache_inputs(settings, record.data_versions)
    # The golden set by content: an edited golden batch re-scores (and so retrains) the candidate.
    key = runner.key("train", [], data=record.data_versions, label_metrics=label_metrics,
                     golden=golden_name(settings), **start)
    checkpoints = settings.paths.home / CHECKPOINTS_DIR / key  # stable across attempts: training resumes there

    def train(_key: str) -> tuple[TrainOutcome, dict[str, Any]]:
        close_abandoned_training_runs(settings, checkpoints)  # what a killed attempt left open in MLflow
        outcome = timed("train", stage_train, settings, record.run_id, label_metrics, record.data_versions.get("inputs"),
                        checkpoints)
        return outcome, asdict(outcome)

    outcome, outputs, _ = runner.run("train", key, train, lambda o: TrainOutcome(**o))
    record.train = outputs
    write_summary(settings, record)
    lineage = {"data_version": record.data_versions["inputs"],
               **{f"data.{name}": tag for name, tag in record.data_versions.items()},
               "flow_run": record.run_id, "feature_service": "training", **lineage}

    def register(_key: str) -> tuple[str, dict[str, Any]]:
        version = timed("register", register_once, settings, outcome, lineage)
        return version, {"version": version}

    key = runner.key("register", [key])
    version, _, _ = runner.run("register", key, register, lambda o: o["version"])
    shutil.rmtree(checkpoints, ignore_errors=True)  # the model is in the registry: its checkpoints are done
    record.model = {"name": settings.params.registry.model_name, "version": version}
    write_summary(settings, record)

    def gate(_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        decision = timed("gate", gate_once, settings, version, record.run_id)
        return decision, decision

    key = runner.key("gate", [key])
    record.gate, _, _ = runner.run("gate", key, gate, lambda o: o)
    record.model["champion"] = record.gate["lineage"].get("champion_after")
    write_summary(settings, record)
    return key


def _monitor_key(settings: Settings, runner: StageRunner, inputs_key: str, rejected_at: str | None) -> str:
    from models.registry import CHAMPION

    from flows.stage_config import registry_for

    champion = registry_for(settings).alias_version(CHAMPION)
    return runner.key("monitor", [inputs_key], champion=champion, **({"rejected_at": rejected_at} if rejected_at else {}))


def _monitor_and_react(settings: Settings, record: RunRecord, timed: StageCall, runner: StageRunner, inputs_key: str,
                       upstream: str | None, react: StageCall | None) -> None:
    """Drift of the batch against the champion's window, then the loop's reaction (alerts, retraining).

    Monitor is keyed by the batch's inputs and the champion it compares against; the reaction by
    the monitor's key and the model stages' (a re-run sends no alert twice and does not retrain).
    """
    key = _monitor_key(settings, runner, inputs_key, None)

    def monitor(_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        summary = timed("monitor", stage_monitor, settings, record.batch_id, settings.paths.runs / record.run_id)
        return summary, summary

    record.monitor, _, _ = runner.run("monitor", key, monitor, lambda o: o)
    write_summary(settings, record)
    _react(settings, record, timed, runner, [key, *([upstream] if upstream else [])], react)


def _react(settings: Settings, record: RunRecord, timed: StageCall, runner: StageRunner, upstream: list[str],
           react: StageCall | None) -> None:
    if react is None:
        return

    def reaction(_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        loop = timed("react", react, settings, record)
        return loop, loop

    record.loop, _, _ = runner.run("react", runner.key("react", upstream), reaction, lambda o: o)
    write_summary(settings, record)


@contextmanager
def _monitored_if_rejected(settings: Settings, record: RunRecord, timed: StageCall, runner: StageRunner,
                           react: StageCall | None) -> Iterator[None]:
    """A batch that a data stage after clean rejects is monitored and reacted to (the rejection is alerted)
    in this run; then the rejection is re-raised, so the run still fails at that stage.

    Monitor is keyed by the batch's clean rows, the champion and the rejecting stage, the reaction by the
    monitor's key: a re-run (or `--resume`) of the rejected batch reuses both and alerts nothing twice. A
    failing drift check or reaction is recorded in the summary and does not hide the rejection (the alert
    still goes out after a failed check; a failed reaction is tried again by the next run).
    """
    try:
        yield
    except BatchRejected as err:
        stage = record.failed_stage
        if stage not in REJECTING_STAGES or "clean" not in record.cache:
            raise
        record.rejection = {"stage": stage, "expectation": err.expectation, "observed": err.observed,
                            "bound": err.bound, "sample_ids": list(err.sample_ids), "detail": str(err)}
        write_summary(settings, record)
        try:
            key = _monitor_key(settings, runner, record.cache["clean"]["key"], stage)

            def monitor(_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
                summary = timed("monitor", stage_monitor, settings, record.batch_id, settings.paths.runs / record.run_id,
                                record.rejection)
                return summary, summary

            try:
                record.monitor, _, _ = runner.run("monitor", key, monitor, lambda o: o)
            except Exception as failure:  # the drift check broke; the rejection still has to be told
                log.warning("monitoring the rejected batch %s failed: %s", record.batch_id, failure)
                record.monitor = {"status": "failed", "batch": record.batch_id,
                                  "error": f"{type(failure).__name__}: {failure}"}
            write_summary(settings, record)
            try:
                _react(settings, record, timed, runner, [key], react)
            except Exception as failure:  # the run's error stays the rejection; the next run reacts again
                log.warning("reacting to the rejected batch %s failed: %s", record.batch_id, failure)
                record.loop = {"status": "failed", "error": f"{type(failure).__name__}: {failure}"}
        finally:
            record.failed_stage = stage  # the run failed there, whatever monitoring did after
        raise


def run_stages(settings: Settings, source: Path | str, call: StageCall = call_directly, run_id: str | None = None,
               react: StageCall | None = None, reuse: bool = True) -> RunRecord:
    """The lifecycle on one landing batch: data stages, train, register, gate, monitor, and `react`
    (`flows.loop`: alerts and retraining on drift) when given.

    Stages recorded by an earlier run with the same inputs are reused (`reuse=False`: computed
    again); an existing `run_id` resumes that run. The summary is written after every stage and
    whatever happens; a failing stage marks the run failed and re-raises.
    """
    check_registry_lock(settings)  # the gate's lock must be takeable before any stage runs, not after training
    record = RunRecord(run_id=run_id or new_run_id(), source=str(source))
    timed = _timer(record, call)
    runner = _runner(settings, record, timed, reuse)
    with _recorded(settings, record), ExitStack() as held:
        with _monitored_if_rejected(settings, record, timed, runner, react):
            statistics, inputs_key = _data_stages(settings, source, record, timed, runner, held)
        gate_key = _model_stages(settings, record, timed, runner, record.stages["label"].get("metrics"),
                                 {"batch": record.batch_id or "", "validation": json.dumps(statistics, default=str)[:5000]})
        _monitor_and_react(settings, record, timed, runner, inputs_key, gate_key, react)
    return record


def run_ingest_stages(settings: Settings, source: Path | str, call: StageCall = call_directly, run_id: str | None = None,
                      react: StageCall | None = None, reuse: bool = True) -> RunRecord:
    """A new landing batch into the lake and the feature store, then its drift check and `react`; no training.
    A batch a data stage rejects is monitored and reacted to all the same, then the run fails (`run_stages`)."""
    record = RunRecord(run_id=run_id or new_run_id(), source=str(source), command="ingest")
    timed = _timer(record, call)
    runner = _runner(settings, record, timed, reuse)
    with _recorded(settings, record), ExitStack() as held:
        with _monitored_if_rejected(settings, record, timed, runner, react):
            _, inputs_key = _data_stages(settings, source, record, timed, runner, held)
        _monitor_and_react(settings, record, timed, runner, inputs_key, None, react)
    return record


def run_monitor_stages(settings: Settings, batch_id: str, call: StageCall = call_directly, run_id: str | None = None,
                       react: StageCall | None = None) -> RunRecord:
    """The drift check of an ingested batch on its own (the hourly schedule), then `react`: always computed,
    since a schedule asks for a fresh look."""
    record = RunRecord(run_id=run_id or new_run_id(), source=f"monitor: {batch_id}", batch_id=batch_id)
    timed = _timer(record, call)
    with _recorded(settings, record):
        record.monitor = timed("monitor", stage_monitor, settings, record.batch_id, settings.paths.runs / record.run_id)
        if react is not None:
            record.loop = timed("react", react, settings, record)
    return record


def run_retrain_stages(settings: Settings, reason: str, call: StageCall = call_directly,
                       run_id: str | None = None) -> RunRecord:
    """Retraining: train on the current window (every accepted batch), register, gate; no new data.
    Always computed: retraining is asked for explicitly (drift, the schedule, `flywheel retrain`)."""
    check_registry_lock(settings)
    record = RunRecord(run_id=run_id or new_run_id(), source=f"retrain: {reason}")
    timed = _timer(record, call)
    with _recorded(settings, record):
        record.data_versions = timed("version", stage_data_versions, settings)
        train = timed("train", stage_train, settings, record.run_id, None, record.data_versions.get("inputs"))
        record.train = asdict(train)
        lineage = {"data_version": record.data_versions["inputs"],
                   **{f"data.{name}": tag for name, tag in record.data_versions.items()},
                   "flow_run": record.run_id, "feature_service": "training", "trigger": reason[:500]}
        version = timed("register", stage_register, settings, train, lineage)
        record.model = {"name": settings.params.registry.model_name, "version": version}
        decision = timed("gate", stage_gate, settings, version, record.run_id)
        record.gate = decision.to_dict()
        record.model["champion"] = decision.lineage.get("champion_after")
    return record
