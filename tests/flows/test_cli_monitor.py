"""Monitoring from the CLI on a real home, with a real webhook sink: one plain lifecycle run makes a champion
(fast params); `flywheel monitor --batch` on a landing folder not ingested yet names `flywheel ingest`,
which then runs the data stages and the drift check without training; a batch validation rejects is
monitored and alerted in its own run (killed before its alert, resumed under the Prefect driver), and a
re-run (plain driver) alerts nothing twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.settings import load_settings
from tests.conftest import frequent_system_metrics, write_fast_lifecycle_params
from tests.prefect_support import prefect_harness
from tests.integration.sinks import webhook_server

pytestmark = pytest.mark.slow
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


def _flat(output: str) -> str:
    return re.sub(r"\s+", " ", output)  # the console wraps long paths


@pytest.fixture(scope="module")
def webhook():
    with webhook_server() as hook:
        yield hook


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """Prefect's test API, also in the environment, so the CLI's Prefect driver uses it (no local server)."""
    from prefect.settings import PREFECT_API_URL

    with prefect_harness(tmp_path_factory), pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
        yield


@pytest.fixture(scope="module")
def home(demo_batch_factory, tmp_path_factory, webhook, small_golden_batch):
    """A home whose champion was trained on one batch; alerts go to the webhook."""
    home = tmp_path_factory.mktemp("home")
    params = write_fast_lifecycle_params(tmp_path_factory.mktemp("params") / "params.yaml", golden=small_golden_batch)
    values = yaml.safe_load(params.read_text())
    values["alerts"] = {"cooldown_hours": 1.0, "sinks": [{"name": "hook", "kind": "webhook", "url": webhook[0]}]}
    params.write_text(yaml.safe_dump(values))
    with frequent_system_metrics():
        result = _invoke("run", "--plain", "--source", str(demo_batch_factory(samples=80, seed=11)),
                         "--home", str(home), "--params", str(params))
    assert result.exit_code == 0, result.output
    return home, params, _latest_summary(home, params)["batch_id"]


@pytest.fixture(scope="module")
def ingested(home, prefect_api, demo_batch_factory):
    """A second landing batch: `monitor --batch DIR` before it is ingested, `flywheel ingest` (Prefect driver), then
    `monitor --batch DIR` again."""
    home, params, first = home
    landing = demo_batch_factory(samples=80, seed=12)
    options = ("--home", str(home), "--params", str(params))
    before = _invoke("monitor", "--batch", str(landing), *options)
    ingest = _invoke("ingest", "--source", str(landing), *options)
    assert ingest.exit_code == 0, ingest.output
    summary = _latest_summary(home, params)
    after = _invoke("monitor", "--batch", str(landing), *options)
    return landing, before, ingest, summary, after


@pytest.fixture(scope="module")
def rejected(ingested, home, prefect_api, demo_batch_factory, webhook):
    """A noisy batch (clips far longer than the accepted ones'): `flywheel ingest --plain` killed (SIGKILL) after its
    drift check, before the reaction; `flywheel run` (Prefect driver) on it; then `flywheel ingest --plain` again."""
    home, params, _ = home
    noisy = str(demo_batch_factory(samples=80, seed=13, drift="noise"))
    options = ("--home", str(home), "--params", str(params))
    posts_before = len(webhook[1])
    env = {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, "FLYWHEEL_FAULT_AT": "react:before"}
    killed = subprocess.run([str(Path(sys.executable).with_name("flywheel")), "ingest", "--plain", "--source", noisy, *options],
                            env=env, capture_output=True, text=True, timeout=600)
    killed_summary = _latest_summary(home, params)
    posts_after_kill = len(webhook[1]) - posts_before
    first = _invoke("run", "--source", noisy, *options)
    first_summary = _latest_summary(home, params)
    posts_after_first = list(webhook[1][posts_before:])
    again = _invoke("ingest", "--plain", "--source", noisy, *options)
    return (killed, killed_summary, posts_after_kill), first, first_summary, posts_after_first, again, \
        _latest_summary(home, params), list(webhook[1][posts_before:])


def _latest_summary(home, params) -> dict:
    runs = load_settings(home, params).paths.runs
    newest = max(runs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def test_monitor_of_a_landing_folder_not_ingested_yet_names_the_command_that_ingests_it(ingested):
    landing, before, *_ = ingested
    assert before.exit_code == 2, before.output
    assert f"flywheel ingest --source {landing}" in _flat(before.output) and "not ingested yet" in _flat(before.output)


def test_ingest_runs_the_data_stages_and_the_drift_check_without_training(ingested, home):
    home, params, first = home
    landing, _, ingest, summary, _ = ingested
    assert summary["status"] == "succeeded" and summary["source"] == str(landing)
    assert list(summary["stages"]) == ["ingest", "clean", "validate", "transform", "label"]
    assert not summary["train"] and not summary["model"] and "train" not in summary["seconds"]
    assert summary["monitor"]["reference_batches"] == [first] and {"data_drift", "prediction_drift"} <= set(summary["monitor"]["checks"])
    assert summary["loop"].get("retrain", {}).get("status") in (None, "not_started")  # drift or not, nothing trained
    assert (load_settings(home, params).paths.batch_inputs(summary["batch_id"])).exists()


def test_monitor_checks_a_landing_folder_by_its_content_against_the_champions_window(ingested, home):
    home, params, first = home
    landing, _, _, ingest_summary, after = ingested
    assert after.exit_code == 0, after.output
    assert "summary:" in after.output and "monitor:" in after.output
    summary = _latest_summary(home, params)
    second = ingest_summary["batch_id"]
    assert summary["status"] == "succeeded" and summary["batch_id"] == second and summary["seconds"]["monitor"] > 0
    monitor = summary["monitor"]
    assert monitor["status"] in {"drift", "no_drift"}
    assert monitor["batch"] == second and monitor["reference_batches"] == [first]
    assert {"data_drift", "embedding_drift", "prediction_drift"} <= set(monitor["checks"])
    by_id = _invoke("monitor", "--batch", second, "--home", str(home), "--params", str(params))
    assert by_id.exit_code == 0 and _latest_summary(home, params)["batch_id"] == second


def test_monitor_of_an_unknown_batch_exits_2_naming_the_known_ones(home):
    home, params, first = home
    result = _invoke("monitor", "--batch", "batch-404", "--home", str(home), "--params", str(params))
    assert result.exit_code == 2
    assert "cannot monitor" in result.output and "'batch-404'" in result.output and first in _flat(result.output)


def test_a_rejected_batch_is_monitored_and_alerted_in_its_run_and_still_fails(rejected, home):
    home, params, first = home
    _, result, summary, posts, *_ = rejected
    assert result.exit_code == 1, result.output
    assert summary["status"] == "failed" and summary["failed_stage"] == "validate"
    rejection = summary["rejection"]
    assert rejection["stage"] == "validate" and rejection["expectation"].endswith("(audio_seconds)")
    monitor = summary["monitor"]
    assert monitor["status"] == "drift" and monitor["batch"] == summary["batch_id"]
    assert monitor["batch_rejected"]["expectation"] == rejection["expectation"]
    assert "data_drift" in monitor["drifted_checks"] and any(c.startswith("aud_") for c in monitor["drifted_columns"])
    assert first in monitor["reference_batches"] and summary["batch_id"] not in monitor["reference_batches"]
    assert "batch rejected by validate" in _flat(result.output) and "alert (rejection): sent to hook" in _flat(result.output)
    # The dashboard's project holds a snapshot of the batch, marked rejected.
    from evidently.ui.workspace import Workspace

    settings = load_settings(home, params)
    workspace = Workspace(str(settings.paths.evidently))
    (project,) = workspace.search_project(settings.params.registry.model_name)
    snapshot = workspace.get_run(project.id, monitor["evidently_snapshot"])
    assert snapshot.name == f"batch {summary['batch_id']} (REJECTED by validate: {rejection['expectation']})"
    # One alert, naming the rejection: which expectation, the observed value and the bound.
    (alert,) = [post for post in posts if "rejected" in post["title"]]
    assert summary["batch_id"] in alert["title"]
    assert rejection["expectation"] in alert["message"] and f"bound {rejection['bound']}" in alert["message"]
    assert summary["loop"]["rejected"] and summary["loop"]["retrain"]["status"] == "not_started"
    assert not summary["train"] and not settings.paths.batch_inputs(summary["batch_id"]).exists()  # never in the window
    # The failed flow run still carries its drift report, marked rejected.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        reports = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drift-report"])))
    assert any(f"REJECTED by validate**: {rejection['expectation']}" in str(report.data) for report in reports)


def test_a_rejected_batch_killed_before_its_alert_resumes_from_its_drift_check(rejected):
    (killed, killed_summary, posts), _, summary, *_ = rejected
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert killed_summary["status"] == "running" and killed_summary["rejection"]["stage"] == "validate"
    assert killed_summary["monitor"]["status"] == "drift" and posts == 0  # checked, not yet alerted
    assert summary["cache"]["monitor"] == {**killed_summary["cache"]["monitor"], "cached": True}
    assert not summary["cache"]["react"]["cached"] and summary["loop"]["alerts"]["sent"] == ["hook"]


def test_a_rejected_batch_run_again_alerts_nothing_twice(rejected):
    _, first, first_summary, _, again, summary, posts = rejected
    assert again.exit_code == 1 and summary["run_id"] != first_summary["run_id"]
    assert summary["failed_stage"] == "validate" and summary["rejection"] == first_summary["rejection"]
    assert summary["cache"]["monitor"]["cached"] and summary["cache"]["react"]["cached"]
    assert summary["monitor"] == first_summary["monitor"]
    assert len([post for post in posts if "rejected" in post["title"]]) == 1


def test_a_killed_ingest_resumes_as_an_ingest_never_as_a_lifecycle_that_would_train(rejected, home, webhook):
    """`flywheel run --resume` of a killed `flywheel ingest` is refused (it would train on the batch), naming the
    command that resumes it; `flywheel ingest --resume` finishes the run, and the batch's alert went out once."""
    home, params, _ = home
    (_, killed_summary, _), *_ = rejected
    options = ("--home", str(home), "--params", str(params))
    as_lifecycle = _invoke("run", "--plain", "--resume", killed_summary["run_id"], *options)
    assert as_lifecycle.exit_code == 2, as_lifecycle.output
    assert f"flywheel ingest --resume {killed_summary['run_id']}" in _flat(as_lifecycle.output)
    posts = len(webhook[1])
    resumed = _invoke("ingest", "--plain", "--resume", killed_summary["run_id"], *options)
    assert resumed.exit_code == 1, resumed.output  # the batch is still rejected
    summary = json.loads((load_settings(home, params).paths.runs / killed_summary["run_id"] / "summary.json").read_text())
    assert summary["command"] == "ingest" and summary["attempts"] == 2 and summary["failed_stage"] == "validate"
    assert not summary["train"] and len(webhook[1]) == posts
