"""One step per stage of the table (`flows/stages.py`): how a stage gets its inputs, its cache key and its record.

A step takes the run's `RunContext` (what earlier steps left: the rows in flight, the upstream keys,
the training outcome) and its own `Stage`. The stage's work itself is a plain function in
`flows/data_stages.py` / `flows/model_stages.py`, called through `ctx.timed` so the driver can run it
as a Prefect task. Each stage runs through `flows.stage_cache.StageRunner`: keyed by its inputs,
recorded when done, re-loaded (not recomputed) when its record exists.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable

from features.clean import rows_as_objects
from features.locks import batch_lock
from features.records import QuarantineRecord, StageReport
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
from flows.run_record import RunRecord, record_report, write_summary
from flows.settings import Settings
from flows.stage_cache import StageRunner, fault_point

if TYPE_CHECKING:
    import pandas as pd

    from flows.stages import Stage

log = logging.getLogger(__name__)

StageCall = Callable[..., Any]
CHECKPOINTS_DIR = "state/checkpoints"  # training checkpoints per train key, removed once the model is registered


@dataclass
class RunContext:
    """What the steps of one run share: the settings, the summary, the driver's call and what earlier steps left."""

    settings: Settings
    record: RunRecord
    timed: StageCall  # call(name, fn, *args): the driver's (a Prefect task, or a plain call), timed
    runner: StageRunner
    held: ExitStack  # the batch's lock, from ingest to the end of the run
    source: Path | str | None = None  # the landing batch (None: a retrain or a drift check of an ingested batch)
    react: StageCall | None = None  # the loop's reaction (flows.loop.reaction); None: no react stage
    trigger: str | None = None  # why a retrain started: into the model version's lineage
    rows: "pd.DataFrame | None" = None  # the batch's rows in flight (clean → label)
    statistics: dict[str, Any] = field(default_factory=dict)  # validation's expectation statistics
    keys: dict[str, str] = field(default_factory=dict)  # stage → its key in this run
    last_key: str | None = None  # the latest stage's key: what the next stage chains on
    inputs_key: str | None = None  # the key of the batch's model inputs as last written (monitoring reads them)
    inputs_written: bool = False  # the batch's model inputs exist (transform ran): a dropped row must leave them
    raw_dir: Path | None = None  # the batch in the lake's raw zone (ingest)
    outcome: Any = None  # train's TrainOutcome
    checkpoints: Path | None = None  # train's checkpoints, removed once the model is registered

    def save(self) -> None:
        write_summary(self.settings.paths.runs, self.record)

    def chain(self, stage: str, key: str) -> str:
        self.keys[stage] = self.last_key = key
        return key

    @property
    def clean_dir(self) -> Path:
        return self.settings.paths.lake_clean / (self.record.batch_id or "")


def _report(ctx: RunContext, report: StageReport) -> None:
    record_report(ctx.settings.paths.quarantine, ctx.record, report)


def _data_step(ctx: RunContext, stage: str, key: str, compute: Callable[[], Any], restore: Callable[[], Any]) -> Any:
    """A data stage: its report goes to the quarantine and the summary when computed, its summary is reused."""

    def computed(_key: str) -> tuple[Any, dict[str, Any]]:
        value = compute()
        return value, {"summary": ctx.record.stages[stage]}

    value, outputs, cached = ctx.runner.run(stage, key, computed, lambda _outputs: restore())
    if cached:
        ctx.record.stages[stage] = {**outputs["summary"], "cached": True}
    ctx.save()
    return value


# ---- data stages -----------------------------------------------------------------------------


def ingest(ctx: RunContext, stage: "Stage") -> None:
    """Always runs (it skips a batch it holds); from here the batch's lock is held until the run ends, so
    another run of the same batch waits, then reuses this one's stages."""
    settings, record = ctx.settings, ctx.record
    fault_point("ingest:before")
    started = time.perf_counter()
    result = ctx.timed("ingest", stage_ingest, settings, ctx.source)
    batch = record.batch_id = result.batch_id
    ctx.held.enter_context(batch_lock(settings.paths.lake_raw, batch, record.run_id))
    _report(ctx, result.report)
    key = ctx.chain("ingest", ctx.runner.key("ingest", batch=batch))
    ctx.runner.note("ingest", key, {"batch_id": batch}, round(time.perf_counter() - started, 3), result.report.skipped)
    ctx.save()
    ctx.raw_dir = result.batch_dir


def clean(ctx: RunContext, stage: "Stage") -> None:
    def compute() -> Any:
        result = ctx.timed("clean", stage_clean, ctx.settings, ctx.raw_dir)
        _report(ctx, result.report)
        return result.rows

    key = ctx.chain("clean", ctx.runner.key("clean", [ctx.last_key]))
    ctx.rows = _data_step(ctx, "clean", key, compute, lambda: load_clean_rows(ctx.clean_dir))


def validate(ctx: RunContext, stage: "Stage") -> None:
    rows, batch = ctx.rows, ctx.record.batch_id

    def compute() -> Any:
        accepted, report, statistics = ctx.timed("validate", stage_validate, ctx.settings, batch, rows, ctx.record.run_id)
        _report(ctx, report)
        ctx.record.stages["validate"]["expectations"] = statistics
        return accepted

    key = ctx.chain("validate", ctx.runner.key("validate", [ctx.last_key]))
    ctx.rows = _data_step(ctx, "validate", key, compute,
                          lambda: without_quarantined(rows, ctx.settings.paths.quarantine, batch, "validate"))
    ctx.statistics = ctx.record.stages["validate"]["expectations"]


def transform(ctx: RunContext, stage: "Stage") -> None:
    rows, batch = ctx.rows, ctx.record.batch_id

    def compute() -> Any:
        transformed, report = ctx.timed("transform", stage_transform, ctx.settings, batch, ctx.clean_dir, rows)
        _report(ctx, report)
        return transformed

    key = ctx.inputs_key = ctx.chain("transform", ctx.runner.key("transform", [ctx.last_key]))
    ctx.rows = _data_step(ctx, "transform", key, compute,
                          lambda: without_quarantined(rows, ctx.settings.paths.quarantine, batch, "transform"))
    ctx.inputs_written = True


def label(ctx: RunContext, stage: "Stage") -> None:
    def compute() -> None:
        _report(ctx, ctx.timed("label", stage_label, ctx.settings, ctx.record.batch_id, ctx.rows, ctx.clean_dir))

    key = ctx.chain("label", ctx.runner.key("label", [ctx.last_key]))
    _data_step(ctx, "label", key, compute, lambda: None)


def version(ctx: RunContext, stage: "Stage") -> None:
    """DVC versions of what training reads. Always runs (DVC hashes content, so an unchanged folder costs a
    stat): its key is the versions themselves, i.e. the training window's content, labels included. With no
    batch in this run (a retrain), the lake's current versions."""
    fault_point("version:before")
    started = time.perf_counter()
    if ctx.source is not None:
        ctx.record.data_versions = ctx.timed("version", stage_version_data, ctx.settings, ctx.record.batch_id)
    else:
        ctx.record.data_versions = ctx.timed("version", stage_data_versions, ctx.settings)
    upstream = [ctx.last_key] if ctx.last_key else []
    key = ctx.chain("version", ctx.runner.key("version", upstream, data=ctx.record.data_versions))
    reused = ctx.runner.store.load(key) is not None
    ctx.runner.note("version", key, ctx.record.data_versions, round(time.perf_counter() - started, 3), reused)
    ctx.save()


# ---- model stages ----------------------------------------------------------------------------


def train(ctx: RunContext, stage: "Stage") -> None:
    """Keyed by the lake's versions of its inputs (every accepted batch and the feature store's labels),
    the label model's metrics, the golden set's content and whatever the family adds (a fine-tune: the
    version it starts from). Not chained on the data stages: the window, not this batch, is its input."""
    from flows.exactly_once import close_abandoned_training_runs
    from flows.families import configured_family
    from flows.model_stages import TrainOutcome, golden_name, stage_train

    settings, record = ctx.settings, ctx.record
    label_metrics = (record.stages.get("label") or {}).get("metrics")
    # The family's own inputs to the key: its code, and e.g. for a fine-tune of the champion the version it
    # starts from (not simply @champion: after this training was promoted, @champion is its own result).
    start = configured_family(settings).train_cache_inputs(settings, record.data_versions)
    key = ctx.chain("train", ctx.runner.key("train", [], data=record.data_versions, label_metrics=label_metrics,
                                            golden=golden_name(settings), **start))
    checkpoints = settings.paths.home / CHECKPOINTS_DIR / key  # stable across attempts: training resumes there

    def compute(_key: str) -> tuple[Any, dict[str, Any]]:
        close_abandoned_training_runs(settings, checkpoints)  # what a killed attempt left open in MLflow
        outcome = ctx.timed("train", stage_train, settings, record.run_id, label_metrics,
                            record.data_versions.get("inputs"), checkpoints)
        return outcome, asdict(outcome)

    ctx.outcome, record.train, _ = ctx.runner.run("train", key, compute, lambda o: TrainOutcome(**o))
    ctx.checkpoints = checkpoints
    ctx.save()


def _lineage(ctx: RunContext) -> dict[str, str]:
    record = ctx.record
    lineage = {"data_version": record.data_versions["inputs"],
               **{f"data.{name}": tag for name, tag in record.data_versions.items()},
               "flow_run": record.run_id, "feature_service": "training"}
    if record.batch_id:
        lineage["batch"] = record.batch_id
    if ctx.statistics:
        lineage["validation"] = json.dumps(ctx.statistics, default=str)[:5000]
    if ctx.trigger:
        lineage["trigger"] = ctx.trigger[:500]
    return lineage


def register(ctx: RunContext, stage: "Stage") -> None:
    """Keyed by train's key: a re-run never registers a second version."""
    from flows.exactly_once import register_once

    def compute(_key: str) -> tuple[str, dict[str, Any]]:
        version_ = ctx.timed("register", register_once, ctx.settings, ctx.outcome, _lineage(ctx))
        return version_, {"version": version_}

    key = ctx.chain("register", ctx.runner.key("register", [ctx.keys["train"]]))
    version_, _, _ = ctx.runner.run("register", key, compute, lambda o: o["version"])
    if ctx.checkpoints is not None:  # the model is in the registry: its checkpoints are done
        shutil.rmtree(ctx.checkpoints, ignore_errors=True)
    ctx.record.model = {"name": ctx.settings.params.registry.model_name, "version": version_}
    ctx.save()


def gate(ctx: RunContext, stage: "Stage") -> None:
    """Keyed by register's key; promotes the candidate only if it passes."""
    from flows.exactly_once import gate_once

    version_ = ctx.record.model["version"]

    def compute(_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        decision = ctx.timed("gate", gate_once, ctx.settings, version_, ctx.record.run_id)
        return decision, decision

    key = ctx.chain("gate", ctx.runner.key("gate", [ctx.keys["register"]]))
    ctx.record.gate, _, _ = ctx.runner.run("gate", key, compute, lambda o: o)
    ctx.record.model["champion"] = ctx.record.gate["lineage"].get("champion_after")
    ctx.save()


# ---- watching the batch ------------------------------------------------------------------------


def monitor_key(ctx: RunContext, upstream: str | None, rejected_at: str | None = None) -> str:
    from flows.stage_config import champion_version

    champion = champion_version(ctx.settings)
    extra: dict[str, Any] = {"champion": champion}
    if rejected_at:
        extra["rejected_at"] = rejected_at
    if upstream is None:  # a drift check of an ingested batch on its own
        extra["batch"] = ctx.record.batch_id
    return ctx.runner.key("monitor", [upstream] if upstream else [], **extra)


def monitor(ctx: RunContext, stage: "Stage", rejection: dict[str, Any] | None = None) -> None:
    """Drift of the batch against the champion's window; keyed by the batch's inputs and that champion."""
    from flows.model_stages import stage_monitor

    record = ctx.record
    upstream = ctx.keys.get("clean") if rejection else ctx.inputs_key
    key = ctx.chain("monitor", monitor_key(ctx, upstream, (rejection or {}).get("stage")))
    args = (ctx.settings, record.batch_id, ctx.settings.paths.runs / record.run_id, *([rejection] if rejection else []))

    def compute(_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        summary = ctx.timed("monitor", stage_monitor, *args)
        return summary, summary

    record.monitor, _, _ = ctx.runner.run("monitor", key, compute, lambda o: o)
    ctx.save()


def react(ctx: RunContext, stage: "Stage") -> None:
    """The loop's reaction (alerts, retraining), keyed by the monitor's key and the gate's: a re-run sends
    no alert twice and does not retrain."""
    if ctx.react is None:
        return
    upstream = [ctx.keys[name] for name in ("monitor", "gate") if name in ctx.keys]

    def compute(_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        loop = ctx.timed("react", ctx.react, ctx.settings, ctx.record)
        return loop, loop

    ctx.record.loop, _, _ = ctx.runner.run("react", ctx.runner.key("react", upstream), compute, lambda o: o)
    ctx.save()


# ---- a project's own stages (stages.extra) --------------------------------------------------------


DROPPED = "dropped_by_stage"


def _kept_rows(stage: "Stage", rows: "pd.DataFrame | None", result: Any) -> tuple[Any, dict[str, str], dict[str, Any]]:
    """(rows that go on, or None when the stage passed them all on untouched; reasons; notes) from what it returned."""
    import pandas as pd

    from flows.stages import StageResult

    kept: Any = None
    reasons: dict[str, str] = {}
    notes: dict[str, Any] = {}
    if isinstance(result, StageResult):
        kept, reasons, notes = result.rows, dict(result.reasons), dict(result.notes)
    elif isinstance(result, pd.DataFrame):
        kept = result
    elif isinstance(result, dict):
        notes = result
    elif result is not None:
        raise TypeError(f"stage {stage.name} ({stage.extra['path']}) returned a {type(result).__name__}; "
                        "it may return None, the rows that go on (a DataFrame), a StageResult or a dict of notes")
    if kept is None:
        return None, reasons, notes
    if rows is None:
        raise ValueError(f"stage {stage.name} runs after {stage.extra['after']}, where no rows are in flight: "
                         "it cannot return rows; return a dict of notes or None")
    if "sample_id" not in kept.columns or not set(kept["sample_id"]) <= set(rows["sample_id"]):
        raise ValueError(f"stage {stage.name} returned rows that are not a subset of the rows it was given "
                         "(by sample_id): a stage may drop rows, never add them")
    return kept, reasons, notes


def extra_stage(ctx: RunContext, stage: "Stage") -> None:
    """A project's stage from params.yaml `stages.extra`: called with the rows in flight and its context.

    Rows it drops are quarantined (reason `dropped_by_stage`, with its detail) and leave the batch's model
    inputs when those exist already; its notes go to the summary. Cached like a built-in stage: keyed by
    its module's source, its own params and the stage before it.
    """
    from models.inputs import save_model_input_shards

    from flows.stage_config import input_spec
    from flows.stages import ExtraStageContext

    settings, record, rows = ctx.settings, ctx.record, ctx.rows
    spec, batch = stage.extra, record.batch_id

    def compute() -> Any:
        context = ExtraStageContext(stage.name, MappingProxyType(dict(spec["params"])), batch, record.run_id, settings,
                                    MappingProxyType(json.loads(json.dumps(asdict(record), default=str))))
        given = None if rows is None else rows_as_objects(rows)  # a copy, with None for a missing value
        kept, reasons, notes = _kept_rows(stage, rows, ctx.timed(stage.name, spec["fn"], given, context))
        if rows is None:
            record.stages[stage.name] = {"rows_in": None, "rows_out": None, "rows_quarantined": 0, "reasons": {},
                                         "skipped": False, **notes}
            return None
        kept = rows if kept is None else kept
        dropped = rows.loc[~rows["sample_id"].isin(kept["sample_id"]), "sample_id"]
        quarantined = [QuarantineRecord(sid, stage.name, DROPPED,
                                        reasons.get(sid, f"dropped by the project's stage {stage.name} ({spec['path']})"),
                                        {"sample_id": sid}) for sid in dropped]
        kept = rows[rows["sample_id"].isin(kept["sample_id"])].reset_index(drop=True)  # the stage's rows, in order
        _report(ctx, StageReport(stage.name, len(rows), len(kept), quarantined, notes=notes))
        if quarantined and ctx.inputs_written:  # the batch's model inputs were written with these rows: rewrite them
            save_model_input_shards(settings.paths.batch_inputs(batch), ctx.clean_dir, kept, input_spec(settings))
        return kept

    def restore() -> Any:
        if rows is None:
            return None
        return without_quarantined(rows, settings.paths.quarantine, batch, stage.name)

    key = ctx.chain(stage.name, ctx.runner.key(stage.name, [ctx.last_key] if ctx.last_key else [],
                                               params=dict(spec["params"])))
    kept = _data_step(ctx, stage.name, key, compute, restore)
    if rows is not None:
        ctx.rows = kept
        if ctx.inputs_written:
            ctx.inputs_key = key
