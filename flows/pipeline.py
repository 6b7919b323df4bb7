"""The drivers' one entry point: a slice of the stage table (`flows/stages.py`) run in order, and its summary.

`run_table` takes a `call(name, fn, *args)` hook: the Prefect flow passes one that runs each stage's
function as a task (or subflow); `flywheel run --plain`, `flywheel stage` and the benchmarks call them
directly. Nothing here imports Prefect, so the wiring is written once for both drivers, and the run
kinds are slices of one table: the lifecycle (`run_stages`), an ingest, a retrain and a drift check.

Each stage runs through `flows.stage_cache.StageRunner` (`flows/steps.py`): keyed by its inputs,
recorded when done, reused (re-loaded, not recomputed) when its record exists, so a re-run or
`--resume` of a killed run continues from the first stage without a record. The summary is rewritten
after every stage, so a killed run leaves one saying how far it got (status "running").

A batch that a data stage after clean refuses as a whole (`BatchRejected`: validation's reference
bounds, too many bad rows) is still monitored, as cleaned, against the champion's window in the same
run, and the reaction alerts on the rejection itself; then the run fails at that stage as before.
The batch never reaches the feature store or the model inputs, so no training ever sees it.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from features.expectations import BatchRejected
from flows.registry_locks import check_registry_lock
from flows.run_record import RunRecord, new_run_id, write_summary
from flows.settings import Settings
from flows.stage_cache import StageRunner, StageStore
from flows.stages import DATA, Stage, from_training, ingest_only, lifecycle, stage_table, watch_only
from flows.steps import RunContext, StageCall

log = logging.getLogger(__name__)

__all__ = ["RunRecord", "new_run_id", "write_summary", "run_table", "run_stages", "run_ingest_stages",
           "run_retrain_stages", "run_monitor_stages", "call_directly", "StageCall", "NotResumable", "load_resumable"]

STAGES_DIR = "state/stages"  # one record per completed stage, under FLYWHEEL_HOME (flows/stage_cache.py)


def call_directly(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


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
    write_summary(settings.paths.runs, record)
    try:
        yield
        record.status = "succeeded"
    except BaseException as err:
        record.status = "failed"
        record.error = f"{type(err).__name__}: {err}"
        raise
    finally:
        record.finished_at = datetime.now(timezone.utc).isoformat()
        write_summary(settings.paths.runs, record)


def _monitored_if_rejected(ctx: RunContext, table: tuple[Stage, ...]) -> Callable[[BatchRejected], None]:
    """What a run does when a data stage after clean rejects the batch: monitor it as cleaned and react (the
    rejection is alerted) in this run; then the rejection is re-raised, so the run still fails at that stage.

    Monitor is keyed by the batch's clean rows, the champion and the rejecting stage, the reaction by the
    monitor's key: a re-run (or `--resume`) of the rejected batch reuses both and alerts nothing twice. A
    failing drift check or reaction is recorded in the summary and does not hide the rejection (the alert
    still goes out after a failed check; a failed reaction is tried again by the next run).
    """
    from flows import steps

    names = {stage.name: stage for stage in table}

    def handle(err: BatchRejected) -> None:
        record = ctx.record
        stage = record.failed_stage
        spec = names.get(stage or "")
        may_reject = spec is not None and (spec.rejects_batch or (spec.is_extra and spec.part == DATA))
        if not may_reject or "clean" not in record.cache or "monitor" not in names:
            return
        record.rejection = {"stage": stage, "expectation": err.expectation, "observed": err.observed,
                            "bound": err.bound, "sample_ids": list(err.sample_ids), "detail": str(err)}
        ctx.save()
        try:
            try:
                steps.monitor(ctx, names["monitor"], record.rejection)
            except Exception as failure:  # the drift check broke; the rejection still has to be told
                log.warning("monitoring the rejected batch %s failed: %s", record.batch_id, failure)
                record.monitor = {"status": "failed", "batch": record.batch_id,
                                  "error": f"{type(failure).__name__}: {failure}"}
            ctx.save()
            try:
                if "react" in names:
                    steps.react(ctx, names["react"])
            except Exception as failure:  # the run's error stays the rejection; the next run reacts again
                log.warning("reacting to the rejected batch %s failed: %s", record.batch_id, failure)
                record.loop = {"status": "failed", "error": f"{type(failure).__name__}: {failure}"}
        finally:
            record.failed_stage = stage  # the run failed there, whatever monitoring did after

    return handle


def run_table(settings: Settings, stages: tuple[Stage, ...], record: RunRecord, call: StageCall = call_directly,
              source: Path | str | None = None, react: StageCall | None = None, reuse: bool = True,
              trigger: str | None = None) -> RunRecord:
    """Run `stages` (a slice of the table) in order for one run, reusing what earlier runs recorded unless
    `reuse` is False. The summary is written at once, after every stage and whatever happens; a failing
    stage marks the run failed and re-raises. Whatever happens, the MLflow runs it made get the run id and
    the links to the other UIs, and so does its Data Docs validation page (flows/run_links.py)."""
    from flows.run_links import link_data_docs_page, link_mlflow_runs, prefect_links

    record.links = {**prefect_links(), **record.links}  # inside a flow run (retrain, monitor, …): its page
    if any(stage.name in ("train", "register", "gate") for stage in stages):
        check_registry_lock(settings)  # the gate's lock must be takeable before any stage runs, not after training
    timed = _timer(record, call)
    params = settings.params.model_dump(mode="json", by_alias=True)
    runner = StageRunner(StageStore(settings.paths.home / STAGES_DIR), params, record.run_id, timed, reuse, record.cache,
                         table=stage_table(settings))
    with _recorded(settings, record), ExitStack() as held:
        ctx = RunContext(settings, record, timed, runner, held, source=source, react=react, trigger=trigger)
        on_rejection = _monitored_if_rejected(ctx, stages)
        try:
            for stage in stages:
                try:
                    stage.step(ctx, stage)
                except BatchRejected as err:
                    on_rejection(err)
                    raise
        finally:
            link_mlflow_runs(settings, record)
            link_data_docs_page(settings, record)
    return record


def run_stages(settings: Settings, source: Path | str, call: StageCall = call_directly, run_id: str | None = None,
               react: StageCall | None = None, reuse: bool = True, links: dict[str, str] | None = None) -> RunRecord:
    """The lifecycle on one landing batch: data stages, train, register, gate, monitor, and `react`
    (`flows.loop`: alerts and retraining on drift) when given. An existing `run_id` resumes that run.
    `links`: the driver's pages of the run (the Prefect flow run's), kept in the summary."""
    record = RunRecord(run_id=run_id or new_run_id(), source=str(source), links=dict(links or {}))
    return run_table(settings, lifecycle(stage_table(settings)), record, call, source, react, reuse)


def run_ingest_stages(settings: Settings, source: Path | str, call: StageCall = call_directly, run_id: str | None = None,
                      react: StageCall | None = None, reuse: bool = True, links: dict[str, str] | None = None) -> RunRecord:
    """A new landing batch into the lake and the feature store, then its drift check and `react`; no training."""
    record = RunRecord(run_id=run_id or new_run_id(), source=str(source), command="ingest", links=dict(links or {}))
    return run_table(settings, ingest_only(stage_table(settings)), record, call, source, react, reuse)


def run_monitor_stages(settings: Settings, batch_id: str, call: StageCall = call_directly, run_id: str | None = None,
                       react: StageCall | None = None) -> RunRecord:
    """The drift check of an ingested batch on its own (the hourly schedule), then `react`: always computed,
    since a schedule asks for a fresh look."""
    record = RunRecord(run_id=run_id or new_run_id(), source=f"monitor: {batch_id}", batch_id=batch_id)
    return run_table(settings, watch_only(stage_table(settings)), record, call, None, react, reuse=False)


def run_retrain_stages(settings: Settings, reason: str, call: StageCall = call_directly,
                       run_id: str | None = None) -> RunRecord:
    """Retraining: the table from `version` on, with no new batch: the window's current versions, train,
    register, gate (exactly once, like the lifecycle's). Always computed: retraining is asked for explicitly."""
    record = RunRecord(run_id=run_id or new_run_id(), source=f"retrain: {reason}")
    return run_table(settings, from_training(stage_table(settings)), record, call, None, None, reuse=False,
                     trigger=reason)


def run_one_stage(settings: Settings, name: str, source: Path | str, call: StageCall = call_directly,
                  run_id: str | None = None, react: StageCall | None = None) -> RunRecord:
    """`flywheel stage NAME`: the table up to NAME on one landing batch; the stages before it are re-loaded
    from their records (computed only if none exists), NAME is computed unless its record exists too."""
    from flows.stages import up_to

    record = RunRecord(run_id=run_id or new_run_id(), source=str(source), command=f"stage:{name}")
    return run_table(settings, up_to(stage_table(settings), name), record, call, source, react)
