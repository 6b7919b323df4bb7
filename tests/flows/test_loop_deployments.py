"""The loop's deployments: prefect.yaml matches params.yaml; `flywheel schedule --once` registers the
three deployments with their crons and the drift trigger on a real local server; a drift event
starts a retraining flow run."""

from __future__ import annotations

import time

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import PROJECT
from tests.integration.services import free_port

def effective_schedule() -> dict:
    """params.yaml's `schedule:` over its defaults (the example leaves it at them)."""
    from flows.settings import load_params

    return load_params(PROJECT / "params.yaml").schedule.model_dump()


DEPLOYMENTS = {"flywheel-ingest": "ingest", "flywheel-retrain": "retrain", "flywheel-monitor": "monitor"}


def test_prefect_yaml_describes_the_scheduled_deployments_of_params_yaml():
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    schedule = effective_schedule()
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert set(by_name) == set(DEPLOYMENTS)
    for name, key in DEPLOYMENTS.items():
        assert [(s["cron"], s["timezone"]) for s in by_name[name]["schedules"]] == [(schedule[key], schedule["timezone"])]
        module, function = by_name[name]["entrypoint"].split(":")
        assert (PROJECT / module).is_file() and f"def {function}(" in (PROJECT / module).read_text()
    assert by_name["flywheel-ingest"]["parameters"]["source"] == schedule["ingest_source"]
    (trigger,) = by_name["flywheel-retrain"]["triggers"]
    assert trigger["expect"] == ["flywheel.drift.detected"]
    # The shipped family's registered model (params.yaml registry.model_name, null: flywheel-<train.family>).
    from flows.settings import load_params

    model_name = load_params(PROJECT / "params.yaml").registry.model_name
    assert trigger["match"]["prefect.resource.id"] == f"flywheel.model.{model_name}"


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A real local Prefect server (schedules and triggers need one), its URL in the settings."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.prefect_server import start_server, stop_server

    home = tmp_path_factory.mktemp("prefect")
    url = start_server(home, port=free_port(), timeout=180)
    try:
        with pytest.MonkeyPatch.context() as env, temporary_settings({PREFECT_API_URL: url}):
            env.setenv("PREFECT_API_URL", url)
            env.setenv("PREFECT_HOME", str(home))
            yield url
    finally:
        stop_server(home)


@pytest.fixture(scope="module")
def registered(prefect_api, tmp_path_factory):
    """`flywheel schedule --once` against that server."""
    from flows.cli import app

    home = tmp_path_factory.mktemp("flywheel")
    result = CliRunner().invoke(app, ["schedule", "--once", "--home", str(home)])
    assert result.exit_code == 0, result.output
    return home, result.output


@pytest.mark.slow
def test_schedule_once_registers_the_deployments_with_crons_and_the_drift_trigger(registered):
    from prefect.client.orchestration import get_client

    home, output = registered
    schedule = effective_schedule()
    with get_client(sync_client=True) as client:
        for name, key in DEPLOYMENTS.items():
            deployment = client.read_deployment_by_name(f"{name}/{name}")
            assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == \
                [(schedule[key], schedule["timezone"])], name
            assert deployment.parameters["home"] == str(home)
        retrain = client.read_deployment_by_name("flywheel-retrain/flywheel-retrain")
        automations = client.read_automations_by_name("retrain-on-drift")
    assert retrain.global_concurrency_limit.limit == 1  # two drift events at once: one retraining runs
    (automation,) = automations
    assert automation.trigger.expect == {"flywheel.drift.detected"}
    assert "retrain-on-drift" in output and schedule["monitor"] in output


@pytest.mark.slow
def test_a_drift_event_starts_a_retraining_flow_run(registered):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.drift_events import emit_drift_event, retrain_deployment_exists
    from flows.settings import load_settings
    from monitoring.alerts import DriftAlert

    home, _ = registered
    settings = load_settings(home)
    assert retrain_deployment_exists()
    alert = DriftAlert(settings.params.registry.model_name, "7", "batch-42", ("audio_rms_db",), 1.0)
    assert emit_drift_event(settings, alert)
    reason = f"drift on batch batch-42 ({alert.fingerprint})"  # what the triggered run is told
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("flywheel-retrain/flywheel-retrain")
        only_retrain = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        deadline = time.monotonic() + 60
        runs = []
        while not runs and time.monotonic() < deadline:
            time.sleep(1)
            # this alert's runs only: the session's server is shared, and another test's drift event may
            # start a retraining run of the same deployment meanwhile (seen once with three workers)
            runs = [run for run in client.read_flow_runs(deployment_filter=only_retrain)
                    if run.parameters.get("reason") == reason]
    assert runs, "no retraining flow run within 60 s of the drift event"
    other = load_settings(home.parent / "another-home")  # on a shared server, another home's drift is not its to answer
    assert retrain_deployment_exists(str(home)) and not retrain_deployment_exists(str(other.paths.home))
    assert not emit_drift_event(other, alert)
    (run,) = runs
    assert run.parameters["reason"] == reason
    assert run.parameters["home"] == str(home)  # the deployment's defaults reach the triggered run


@pytest.mark.slow
def test_a_second_home_does_not_take_over_the_first_homes_deployments_unless_told_to(registered, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.cli import app

    home, _ = registered
    other = tmp_path / "other-home"
    refused = CliRunner().invoke(app, ["schedule", "--once", "--home", str(other)], env={"COLUMNS": "300"})
    assert refused.exit_code == 2, refused.output
    assert str(home) in refused.output and "--replace" in refused.output and "FLYWHEEL_PREFECT_SERVER_HOME" in refused.output
    with get_client(sync_client=True) as client:
        assert client.read_deployment_by_name("flywheel-retrain/flywheel-retrain").parameters["home"] == str(home)
    again = CliRunner().invoke(app, ["schedule", "--once", "--home", str(home)])
    assert again.exit_code == 0, again.output  # the home that owns them updates them freely (last: it reschedules)
