"""The lifecycle as the compose stack runs it on Prefect: `prefect server start` with its database
on Postgres (postgresql+asyncpg://), a process work pool, the loop's deployments created from this
checkout (`flow.from_source`), and `prefect worker start --pool` running them in fresh processes
that know only their parameters and the worker's environment.

The lifecycle is the stack's two deployments in order: flywheel-ingest (data stages + drift check)
on a landing batch, then flywheel-retrain (train, register, gate) on the window, with the fast
params of tests/conftest.py. MLflow stays the embedded store under FLYWHEEL_HOME here (the MLflow
server on Postgres has its own test), so a Completed run can be checked in its registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PROJECT
from tests.integration.conftest import PREFECT, prefect_env
from tests.integration.services import postgres_unreachable_reason, start_program, stop_program

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif((reason := postgres_unreachable_reason()) is not None, reason=reason or "")]

POOL = "flywheel-it"


@pytest.fixture(scope="module")
def worker(prefect_on_postgres, tmp_path_factory):
    """A process work pool and one worker polling it every second, on the session's Prefect server
    (tests/integration/conftest.py); yields the worker's log."""
    import subprocess

    home = tmp_path_factory.mktemp("prefect-worker")
    env = prefect_env(home, PREFECT_API_URL=prefect_on_postgres, PREFECT_WORKER_QUERY_SECONDS="1")
    subprocess.run([PREFECT, "work-pool", "create", POOL, "--type", "process"], env=env, check=True,
                   capture_output=True, timeout=120)
    log = home / "worker.log"
    process = start_program([PREFECT, "worker", "start", "--pool", POOL, "--type", "process"], env, log)
    try:
        yield log
    finally:
        stop_program(process)


def _run(deployment: str, parameters: dict, api: str, log: Path):
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment, parameters=parameters, timeout=600, poll_interval=1, as_subflow=False)
    assert flow_run.state.is_completed(), f"{deployment}: {flow_run.state}\n{log.read_text()[-4000:]}"
    return flow_run


def test_the_lifecycle_deployments_run_on_a_worker_of_a_postgres_backed_server(
        prefect_on_postgres, worker, fast_params, demo_batch_factory, tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.loop_flows import INGEST_FLOW, RETRAIN_FLOW
    from flows.settings import load_settings
    from flows.stage_config import registry_for
    from models.registry import CHAMPION

    api, home = prefect_on_postgres, tmp_path / "home"
    monkeypatch.setenv("PREFECT_API_URL", api)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    batch = demo_batch_factory(samples=80, seed=11)
    where = {"home": str(home), "params": str(fast_params)}
    with temporary_settings({PREFECT_API_URL: api}):
        from prefect import flow

        for name in (INGEST_FLOW, RETRAIN_FLOW):
            entrypoint = {INGEST_FLOW: "flows/loop_flows.py:ingest_flow", RETRAIN_FLOW: "flows/loop_flows.py:retrain_flow"}[name]
            flow.from_source(source=str(PROJECT), entrypoint=entrypoint).deploy(
                name, work_pool_name=POOL, parameters=where, print_next_steps=False)
        _run(f"{INGEST_FLOW}/{INGEST_FLOW}", {"source": str(batch)}, api, worker)
        retrained = _run(f"{RETRAIN_FLOW}/{RETRAIN_FLOW}", {"reason": "integration test"}, api, worker)

    settings = load_settings(home, fast_params)
    summary = json.loads((settings.paths.runs / retrained.name / "summary.json").read_text())  # named after the run id
    assert summary["links"]["prefect_flow_run"].endswith(f"/flow-runs/flow-run/{retrained.id}")
    registry = registry_for(settings)
    assert registry.alias_version(CHAMPION) == "1"  # trained, registered and promoted inside the worker's runs
    assert registry.version_tags("1")["gate.passed"] == "true"
    ingested = [p for p in settings.paths.lake_raw.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(ingested) == 1
