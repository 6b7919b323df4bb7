"""The lifecycle as one Prefect flow: every stage of `flows.pipeline.run_stages` runs as a task."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from features.clean import Chunk, ChunkOutcome, CleanParams, clean_rows_chunk, decoding_threads
from flows.data_stages import stage_clean, stage_ingest
from flows.drift_events import emit_drift_event
from flows.loop import reaction
from flows.pipeline import RunRecord, new_run_id, run_stages
from flows.settings import Settings
from flows.stage_config import clean_params
from flows.stage_cache import is_cached_restore



def retries_of(name: str) -> int:
    """The stage's retries as the table declares them (flows/stages.py): stages that talk to a store or
    tracking server may hit a transient error; data stages are deterministic and never retried."""
    from flows.stages import built_in_stages

    return next((stage.retries for stage in built_in_stages() if stage.name == name), 0)


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """A failed stage is tried again only for a transient I/O error (features/transient.py) that outlasted
    the stage's own retries, or a champion that moved while the gate compared (it gates again against the
    new one); a bad parameter or a rejected model fails at once."""
    from features.transient import is_transient
    from models.registry import StaleChampion

    err = state.result(raise_on_failure=False)  # a Failed state's data is the exception
    return isinstance(err, BaseException) and (is_transient(err) or isinstance(err, StaleChampion))


clean_chunk = task(clean_rows_chunk, name="clean-chunk", cache_policy=NO_CACHE)


def map_chunks_as_tasks(chunks: list[Chunk], raw_dir: Path, out_dir: Path, params: CleanParams) -> list[ChunkOutcome]:
    """One Prefect task per chunk of rows, run in parallel by the subflow's task runner."""
    futures = clean_chunk.map(chunks, unmapped(raw_dir), unmapped(out_dir), unmapped(params))
    return [future.result() for future in futures]


def clean_run_name() -> str:
    """The clean subflow's run name: the batch it decodes (its parent, named after the run id, and its tags say which run)."""
    from prefect.runtime import flow_run

    return f"clean batch {Path(str(flow_run.parameters.get('raw_dir', '?'))).name}"


@flow(name="clean", validate_parameters=False, task_runner=ThreadPoolTaskRunner(max_workers=4), flow_run_name=clean_run_name)
def clean_subflow(settings: Settings, raw_dir: Path):
    """The clean stage as a subflow: decoding fans out over chunks of rows as tasks."""
    return stage_clean(settings, raw_dir, map_chunks_as_tasks)


def run_clean_stage(settings: Settings, raw_dir: Path):
    """Local threads by default, as many as the default mapper starts (`features.clean.decoding_threads`), each
    chunk a task of the clean subflow; on the Dask cluster at FLYWHEEL_DASK_ADDRESS when one is given, as one
    task whose chunks are plain Dask tasks (`clean_on_cluster`)."""
    if settings.dask_address is not None:
        return task(clean_on_cluster, name="clean", cache_policy=NO_CACHE)(settings, raw_dir)
    runner = ThreadPoolTaskRunner(max_workers=decoding_threads(clean_params(settings)))
    return clean_subflow.with_options(task_runner=runner)(settings, raw_dir)


def progress_bar(description: str) -> Callable[[float], None]:
    """A progress artifact on the running task's page, which the Prefect UI draws as a bar, and the function
    that moves it (to a percentage): one API call each, not the task run per chunk a subflow would cost.
    Outside a task run (a script calling the stage), a function that does nothing."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:
        return lambda percent: None
    artifact = create_progress_artifact(0.0, description=description)
    return lambda percent: update_progress_artifact(artifact, percent)


@contextmanager
def dask_chunk_mapper(address: str) -> Iterator[tuple[Callable[..., Iterator[Any]], int]]:
    """A `features.ingest.ChunkMapper` that runs each chunk as a plain Dask task on the cluster at `address`, and
    the cluster's thread count. Plain tasks, not Prefect ones: a Prefect task run costs about 0.2 CPU-s of the
    Prefect server's time (measured with its ephemeral server: 48 empty tasks took 10.6 s on one worker,
    against 0.16 s as Dask tasks), as much as hashing and copying a few hundred demo rows."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        def on_cluster(fn: Callable[..., Any], chunks: Any, *args: Any) -> Iterator[Any]:
            chunks = list(chunks)
            futures = client.map(fn, chunks, *([arg] * len(chunks) for arg in args), pure=False)
            moved = progress_bar(f"{fn.__name__} on the Dask cluster: {len(chunks)} chunks")
            try:
                for at in range(len(futures)):  # in chunk order, each result let go once handed back
                    result = futures[at].result()
                    futures[at].release()
                    futures[at] = None
                    moved(100.0 * (at + 1) / len(futures))
                    yield result
            finally:
                # Stopped early (a chunk failed, or the caller closed the generator): the chunks still queued or
                # running end before the stage goes on to remove the folder they write into.
                for future in (future for future in futures if future is not None):
                    future.exception()  # returns once the chunk has ended, whether it succeeded or failed
                    future.release()

        yield on_cluster, max(1, sum(client.nthreads().values()))


def ingest_on_cluster(settings: Settings, source: Path | str):
    """The ingest stage in the lifecycle flow: hashing and copying the batch's files fan out over chunks of
    manifest lines on the Dask cluster at FLYWHEEL_DASK_ADDRESS when one is given (its workers must see the
    landing folder and FLYWHEEL_HOME at the same paths); otherwise one chunk after the other (threads gain
    nothing: file creation in one folder is serialised by the kernel)."""
    if settings.dask_address is None:
        return stage_ingest(settings, source)
    with dask_chunk_mapper(settings.dask_address) as (on_cluster, workers):
        return stage_ingest(settings, source, on_cluster, workers)


def clean_on_cluster(settings: Settings, raw_dir: Path):
    """The clean stage with its chunks of rows as plain Dask tasks on the cluster at FLYWHEEL_DASK_ADDRESS (the
    same chunks as local threads get, so the same outputs). As Prefect tasks on prefect-dask's runner, each
    chunk's task run also took the flow's and the server's CPU, on the cores the workers decode on: on 10k demo
    rows, clean on two workers against one went from x1.56 to x1.62-1.70 as plain tasks (benchmarks/dask_scaling.py).
    The task's page shows a progress bar instead of a task per chunk."""
    with dask_chunk_mapper(settings.dask_address) as (on_cluster, _):
        def on_dask(chunks: list[Chunk], raw_dir: Path, out_dir: Path, params: CleanParams) -> list[ChunkOutcome]:
            return list(on_cluster(clean_rows_chunk, chunks, raw_dir, out_dir, params))

        return stage_clean(settings, raw_dir, on_dask)


# Stages whose body spreads work over the cluster when one is configured: still one Prefect task each. Clean,
# a subflow on local threads, picks its cluster task (clean_on_cluster) in run_clean_stage.
ON_CLUSTER: dict[str, Callable[..., Any]] = {"ingest": ingest_on_cluster}
SUBFLOWS: dict[str, Callable[..., Any]] = {"clean": run_clean_stage}


def restore_cached(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A cached stage's re-load as a task that says so in its log (its key and the run that computed it)."""

    def restore(*args: Any) -> Any:
        get_run_logger().info("stage %s cached: key %s; outputs re-loaded, nothing recomputed", name, fn.flywheel_cached_key)
        return fn(*args)

    return task(restore, name=f"{name} (cached)", cache_policy=NO_CACHE)


def call_as_task(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a stage as a Prefect task, or as its subflow where it fans out; a cached stage (flows/stage_cache.py)
    as a task named "<stage> (cached)" that only re-loads its recorded outputs."""
    if is_cached_restore(fn):
        return restore_cached(name, fn)(*args)
    if name in SUBFLOWS:
        return SUBFLOWS[name](*args)
    stage = task(ON_CLUSTER.get(name, fn), name=name, cache_policy=NO_CACHE, retries=retries_of(name), retry_delay_seconds=2,
                 retry_condition_fn=worth_retrying)
    return stage(*args)


def flywheel_run_name() -> str:
    """A flow run's name: flywheel's run id, the `run_id` parameter; a new id when none is given, which the
    flow then takes as its run id (`run_id_of_this_flow_run`), so the name and the id are the same either way."""
    from prefect.runtime import flow_run

    return flow_run.parameters.get("run_id") or new_run_id()


def run_id_of_this_flow_run(run_id: str | None) -> str:
    """Inside a flow named by `flywheel_run_name`: the run id given, else the flow run's name."""
    from prefect.runtime import flow_run

    return run_id or flow_run.name or new_run_id()


def gate_markdown(record: RunRecord, version_url: str | None = None) -> str:
    """The decision as a human reads it: verdict, the version's MLflow page, one row per check (interval of the
    change), lineage."""
    gate = record.gate
    lineage = gate.get("lineage", {})
    against = f"champion v{lineage['champion_version']}" if lineage.get("champion_version") else "no champion (value bounds only)"
    title = f"{record.model.get('name')} v{record.model.get('version')}"
    lines = [f"# Gate decision for {title}",
             f"**{'PASSED' if gate.get('passed') else 'REJECTED'}** against {against} on golden set "
             f"`{lineage.get('golden_version')}`: {gate.get('reason', '')}", "",
             *([f"Model version in MLflow: [{title}]({version_url}) (its description is the model card); "
                f"flywheel run `{record.run_id}`", ""] if version_url else []),
             "| metric | slice | check | observed | bound | interval | result |", "|---|---|---|---|---|---|---|"]
    for check in gate.get("checks", []):
        interval = f"{check['interval'][0]:+.4f} … {check['interval'][1]:+.4f}" if check.get("interval") else ""
        lines.append(f"| {check['metric']} | {check.get('slice') or 'all'} | {check['kind']} | {check['observed']:.4f} | "
                     f"{check['bound']:.4f} | {interval} | {'pass' if check['passed'] else '**FAIL**'} |")
    if gate.get("skipped_slices"):
        lines += ["", f"Slices too small to judge: {', '.join(gate['skipped_slices'])}"]
    lines += ["", "| lineage | value |", "|---|---|"]
    lines += [f"| {key} | `{str(value)[:200]}` |" for key, value in lineage.items()]
    return "\n".join(lines)


@flow(name="flywheel-lifecycle", validate_parameters=False, log_prints=True, flow_run_name=flywheel_run_name)
def lifecycle_flow(settings: Settings, source: Path | str, run_id: str | None = None, reuse: bool = True) -> RunRecord:
    # On drift: alerts, and a drift event that the retraining deployment answers (if served).
    # An existing run_id resumes that run; recorded stages are reused unless `reuse` is False.
    # A rejected batch fails the flow after its drift check: the artifacts come from the summary either way.
    from flows.dask_cluster import check_cluster_of
    from flows.run_links import prefect_links

    check_cluster_of(settings)  # a cluster that cannot take the data stages' chunks stops the flow before any stage
    run_id = run_id_of_this_flow_run(run_id)
    try:
        return run_stages(settings, source, call=call_as_task, run_id=run_id,
                          react=reaction(emit_drift_event, call_as_task), reuse=reuse, links=prefect_links())
    finally:
        publish_artifacts(settings, run_id)


def publish_artifacts(settings: Settings, run_id: str) -> None:
    """The gate decision and the drift report of a run, as markdown artifacts of the current flow run."""
    path = settings.paths.runs / run_id / "summary.json"
    if not path.is_file():  # the run stopped before its summary was first written
        return
    record = RunRecord(**json.loads(path.read_text()))
    if record.gate:
        from flows.run_links import model_version_url

        url = model_version_url(settings, str(record.model.get("name")), str(record.model.get("version")))
        create_markdown_artifact(gate_markdown(record, url), key="gate-decision", description="champion/challenger gate")
    if record.monitor.get("report"):
        from flows.run_links import evidently_report_url
        from monitoring.reports import drift_markdown

        snapshot_url = evidently_report_url(record.monitor) or ""
        create_markdown_artifact(drift_markdown(record.monitor, snapshot_url if snapshot_url.startswith("http") else None),
                                 key="drift-report", description="drift of this batch")
