"""The whole lifecycle flow under Prefect's test harness: two runs, the second gated against the first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.lifecycle import lifecycle_flow
from flows.settings import load_settings
from tests.conftest import frequent_system_metrics, write_fast_lifecycle_params
from tests.prefect_support import prefect_harness
# The browser checks of the dashboards run on this module's two lifecycle runs (its fixtures).
from tests.flows.browser_ui import (  # noqa: F401
    browser,
    mlflow_ui,
    page,
    test_evidently_dashboard_shows_the_latest_batchs_drift,
    test_mlflow_ui_shows_the_registered_model_at_champion,
    test_mlflow_version_page_shows_the_model_card,
)

pytestmark = pytest.mark.slow

DATA_STAGES = ("ingest", "clean", "validate", "transform", "label")


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    with prefect_harness(tmp_path_factory):
        yield


@pytest.fixture(scope="module")
def two_runs(harness, demo_batch_factory, tmp_path_factory, small_golden_batch):
    home = tmp_path_factory.mktemp("home")
    params = write_fast_lifecycle_params(tmp_path_factory.mktemp("params") / "params.yaml", golden=small_golden_batch)
    settings = load_settings(home, params)
    with frequent_system_metrics():
        first = lifecycle_flow(settings, demo_batch_factory(samples=80, seed=11), "run-1")
        second = lifecycle_flow(settings, demo_batch_factory(samples=80, seed=12), "run-2")
    return settings, first, second


def test_every_data_stage_conserves_rows(two_runs):
    settings, first, second = two_runs
    for record in (first, second):
        summary = json.loads((settings.paths.runs / record.run_id / "summary.json").read_text())
        assert summary["status"] == "succeeded"
        for stage in DATA_STAGES:
            s = summary["stages"][stage]
            assert s["rows_in"] == s["rows_out"] + s["rows_quarantined"], stage
            assert sum(s["reasons"].values()) == s["rows_quarantined"]
        # Demo faults (≈2 %) end in the clean stage's quarantine, each with a reason file entry.
        assert summary["stages"]["clean"]["rows_quarantined"] >= 1
        assert (settings.paths.quarantine / record.batch_id / "clean.jsonl").exists()
        # Stages chain: each stage's input is the previous stage's output.
        outs = [summary["stages"][s]["rows_out"] for s in DATA_STAGES[:-1]]
        ins = [summary["stages"][s]["rows_in"] for s in DATA_STAGES[1:]]
        assert outs == ins


def test_first_run_deploys_a_champion_and_the_second_is_gated_against_it(two_runs):
    settings, first, second = two_runs
    assert first.model["version"] == "1" and first.gate["lineage"]["champion_version"] is None
    assert first.gate["passed"] and first.model["champion"] == "1"
    assert second.model["version"] == "2"
    assert second.gate["lineage"]["champion_version"] == "1"
    assert any(check["kind"] == "change" for check in second.gate["checks"])
    assert second.train["training_batches"] == [first.batch_id, second.batch_id]
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    name = settings.params.registry.model_name
    assert str(client.get_model_version_by_alias(name, "champion").version) == second.model["champion"]
    assert client.get_model_version(name, "2").tags["gate.passed"] == "true"
    tags = client.get_model_version(name, "2").tags
    assert tags["batch"] == second.batch_id
    assert tags["data_version"] == second.data_versions["inputs"] and tags["data_version"].startswith("lake/inputs@")
    assert first.data_versions["inputs"] != second.data_versions["inputs"]  # the training window grew
    assert (settings.paths.home / "dvc-remote").is_dir()
    runs = client.search_runs([client.get_experiment_by_name("flywheel-lifecycle").experiment_id])
    assert len(runs) == 2 and all("zero_shot_image_acc" in r.data.metrics for r in runs)


def test_monitor_compares_the_new_batch_with_the_champions_training_window(two_runs):
    settings, first, second = two_runs
    assert first.monitor["status"] == "no_reference"  # the first champion saw only the current batch
    assert second.monitor["status"] in {"drift", "no_drift"}
    assert second.monitor["reference_batches"] == [first.batch_id]
    assert (settings.paths.runs / second.run_id / "drift_report.html").stat().st_size > 10_000
    assert any(settings.paths.evidently.iterdir())


def test_re_ingesting_a_batch_is_skipped_not_duplicated(two_runs, demo_batch_factory):
    settings, first, _ = two_runs
    from features.ingest import ingest_batch

    again = ingest_batch(demo_batch_factory(samples=80, seed=11), settings.paths.lake_raw)
    assert again.batch_id == first.batch_id and again.report.skipped
    assert len([p for p in settings.paths.lake_raw.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2


def test_mlflow_ui_on_the_embedded_store_shows_the_runs_and_the_champion(two_runs, mlflow_ui):  # noqa: F811
    """What a user sees after `mlflow ui --backend-store-uri sqlite:///…/mlflow.db`: asked over its REST API."""
    import urllib.request

    settings, _, second = two_runs
    name = settings.params.registry.model_name
    with urllib.request.urlopen(f"{mlflow_ui}/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion") as r:
        assert json.loads(r.read())["model_version"]["version"] == second.model["champion"]
    request = urllib.request.Request(f"{mlflow_ui}/api/2.0/mlflow/experiments/get-by-name?experiment_name=flywheel-lifecycle")
    with urllib.request.urlopen(request) as r:
        experiment_id = json.loads(r.read())["experiment"]["experiment_id"]
    body = json.dumps({"experiment_ids": [experiment_id]}).encode()
    search = urllib.request.Request(f"{mlflow_ui}/api/2.0/mlflow/runs/search", data=body,
                                    headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(search) as r:
        assert len(json.loads(r.read())["runs"]) == 2


def test_labels_combine_human_caption_and_champion_votes_and_reach_mlflow(two_runs):
    settings, first, second = two_runs
    first_lfs = set(first.stages["label"]["labels"]["lfs"])
    second_lfs = set(second.stages["label"]["labels"]["lfs"])
    # caption_digit: the example's own labelling function, named in its params.yaml label.functions
    assert {"human", "caption_digit"} <= first_lfs and not any(name.startswith("champion") for name in first_lfs)
    assert {"champion_image", "champion_audio"} <= second_lfs  # the first champion votes on the second batch
    assert json.loads(Path(second.stages["label"]["review_tasks"]).read_text()) is not None
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    run = client.get_run(second.train["mlflow_run_id"])
    assert 0 < run.data.metrics["label_coverage"] <= 1 and "label_conflict_rate" in run.data.metrics


def test_the_training_run_shows_its_data_version_plots_and_retrieval_metrics(two_runs):
    settings, _, second = two_runs
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    run = client.get_run(second.train["mlflow_run_id"])
    (dataset_input,) = run.inputs.dataset_inputs
    assert second.data_versions["inputs"].endswith("@" + dataset_input.dataset.digest)  # lake/inputs@md5
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_audio.png", "plots/recall_at_k.png", "plots/embedding_map.png"} <= plots
    assert 0 <= run.data.metrics["golden.retrieval_audio_to_text_r1"] <= 1
    assert any(key.startswith("system/") for key in run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "image_text.loss")) == 4  # epochs_stage1, live


def test_a_rerun_of_the_same_batch_reuses_every_stage_as_a_cached_task(two_runs, demo_batch_factory):
    """The Prefect driver uses the same stage records as `--plain`: each reused stage is a task named
    "<stage> (cached)", and nothing is trained, registered or promoted again. (Defined before the review
    import below: new review labels are new training data, so after it train rightly runs again.)"""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    settings, _, second = two_runs
    records = sorted(p.name for p in (settings.paths.home / "state" / "stages").iterdir())
    state = lifecycle_flow(settings, demo_batch_factory(samples=80, seed=12), "run-2-again", return_state=True)
    again = state.result()
    assert again.status == "succeeded" and all(entry["cached"] for entry in again.cache.values()), again.cache
    assert again.model == second.model and again.train == second.train
    assert sorted(p.name for p in (settings.paths.home / "state" / "stages").iterdir()) == records
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    names = {task.name.rsplit("-", 1)[0] for task in tasks}
    assert {"clean (cached)", "label (cached)", "train (cached)", "register (cached)", "gate (cached)"} <= names
    assert "train" not in names and "register" not in names


def test_imported_review_labels_get_a_data_version_at_once(two_runs, tmp_path):
    """`flywheel review import` versions the feature tables in the lake at once, not at the next run."""
    from typer.testing import CliRunner

    from features.lake_versioning import open_lake
    from flows.cli import app

    settings, _, second = two_runs
    tasks = json.loads(Path(second.stages["label"]["review_tasks"]).read_text())
    assert tasks, "the demo batch should leave some rows to review"
    at = "2026-03-01T10:00:00Z"
    answer = {"id": 1, "result": [{"id": "r1", "from_name": "label", "to_name": "image", "type": "choices",
                                   "value": {"choices": ["3"]}}],
              "was_cancelled": False, "ground_truth": False, "created_at": at, "updated_at": at, "completed_by": 7}
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{**task, "id": 100 + i, "annotations": [answer]} for i, task in enumerate(tasks[:2])]))
    from tests.conftest import PROJECT

    result = CliRunner().invoke(app, ["review", "import", str(export), "--batch", second.batch_id,
                                      "--home", str(settings.paths.home), "--params", str(PROJECT / "params.yaml")])
    assert result.exit_code == 0, result.output
    lake = open_lake(settings.paths.home, settings.lake_remote, settings.lake_endpoint)
    version = lake.version_of("feast/data").to_tag()
    assert version in " ".join(result.output.split()) and version != second.data_versions["features"]


def _write_after_a_pause(chunk: int, folder: Path) -> int:
    """A chunk of work that writes into `folder` a while after it starts, as ingest's and clean's chunks write into
    the stage's staging folder."""
    import time

    time.sleep(0.3)
    (folder / f"chunk-{chunk}").write_text("written")
    return chunk


def test_the_dask_mapper_stopped_early_lets_its_chunks_end_before_the_caller_goes_on(tmp_path):
    """A stage that stops reading the mapper's results (ingest finding a file changed in one chunk) removes its
    staging folder next: by then no chunk may still be queued or running, or it would write into the removed
    folder (or make it again). Closing the mapper's results waits for them."""
    from distributed import LocalCluster

    from flows.lifecycle import dask_chunk_mapper

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with dask_chunk_mapper(cluster.scheduler_address) as (on_cluster, _):
            results = on_cluster(_write_after_a_pause, range(4), tmp_path)
            assert next(results) == 0
            results.close()  # what the stage's `finally` does before it removes the folder
            assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk-0", "chunk-1", "chunk-2", "chunk-3"]


def test_ingest_and_clean_on_a_dask_cluster_match_local_threads(harness, demo_batch_factory, tmp_path):
    """FLYWHEEL_DASK_ADDRESS sends ingest's and clean's chunks to a Dask cluster: same result, and the clean task's
    page has a progress bar at 100 % (ingest, called here outside a task, draws none). The cluster is the compose
    stack's dask-scheduler and dask-worker (2 worker processes), started here with their compose commands, and
    passes the flows' start-up check."""
    import dataclasses

    from features.ingest import ingest_batch
    from flows.dask_cluster import check_dask_cluster
    from flows.lifecycle import ingest_on_cluster, run_clean_stage

    from tests.conftest import PROJECT
    from tests.integration.services import dask_cluster_as_composed

    settings = load_settings(tmp_path / "home", PROJECT / "params.yaml")
    source = demo_batch_factory(samples=600, seed=13, fault_rate=0.02)  # two chunks of lines, three 256-row chunks
    raw = ingest_batch(source, settings.paths.lake_raw)
    local = run_clean_stage(settings, raw.batch_dir)
    home = tmp_path / "home-dask"
    dask_settings = load_settings(home, PROJECT / "params.yaml")
    with dask_cluster_as_composed(tmp_path) as address:
        assert check_dask_cluster(address) == 2  # the compose default: 2 worker processes of one thread
        dask_settings = dataclasses.replace(dask_settings, dask_address=address)
        dask_raw = ingest_on_cluster(dask_settings, source)
        on_dask = run_clean_stage(dask_settings, dask_raw.batch_dir)
    assert dask_raw.batch_id == raw.batch_id and not dask_raw.report.skipped
    assert (dask_raw.batch_dir / "rows.jsonl").read_bytes() == (raw.batch_dir / "rows.jsonl").read_bytes()
    assert dask_raw.report.to_summary() == raw.report.to_summary()
    assert on_dask.rows.equals(local.rows)
    assert on_dask.report.to_summary() == local.report.to_summary()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    with get_client(sync_client=True) as client:
        bars = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
    bars = [(bar.description, bar.data) for bar in bars if bar.description.startswith("clean_rows_chunk")]
    assert bars == [("clean_rows_chunk on the Dask cluster: 3 chunks", 100.0)]
