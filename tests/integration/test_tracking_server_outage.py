"""The tracking server goes away in the middle of a lifecycle run and comes back on the same port:
the run waits for it (MLflow's per-request retries sized in features/env.py, then the registry's own
retries in features/transient.py), finishes, and the registry holds exactly one version of it.

`mlflow server` on a fresh Postgres database, artifacts proxied by the server, as the compose stack
runs it; the server is killed (SIGKILL to its process group: a crash, not a polite stop), kept down
a few seconds, and started again, which takes another 10-12 s before it answers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from flows.settings import load_settings
from tests.integration.services import (
    fresh_database, free_port, mlflow_server_env, postgres_unreachable_reason, start_program, stop_program, wait_healthy,
    with_database,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif((reason := postgres_unreachable_reason()) is not None, reason=reason or "")]

DOWN_S = 4.0  # how long the server stays dead before it is started again (then ~10 s until it answers)


class RestartableServer:
    """`mlflow server` on one port and one database, which the test can crash and start again."""

    def __init__(self, store: str, artifacts: Path, log: Path, port: int) -> None:
        self.args = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", store,
                     "--artifacts-destination", str(artifacts), "--serve-artifacts",
                     "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        self.log, self.url = log, f"http://127.0.0.1:{port}"
        self.process = None
        self.outages: list[tuple[float, float]] = []  # (killed at, answering again at), epoch seconds

    def start(self) -> None:
        self.process = start_program(self.args, env=mlflow_server_env(), log=self.log)
        wait_healthy(self.process, f"{self.url}/health", self.log, timeout=180)

    def crash_for(self, seconds: float) -> None:
        killed = time.time()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        time.sleep(seconds)
        self.start()
        self.outages.append((killed, time.time()))

    def stop(self) -> None:
        if self.process is not None:
            stop_program(self.process)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-outage")
    with fresh_database("outage") as database:
        store = with_database(database, database.rsplit("/", 1)[1], driver="psycopg")
        running = RestartableServer(store, folder / "artifacts", folder / "server.log", free_port())
        running.start()
        try:
            yield running, database
        finally:
            running.stop()


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _runs(url: str) -> list[dict]:
    """Runs of the lifecycle experiment ([] before it exists)."""
    try:
        experiment = _get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=flywheel-lifecycle")["experiment"]
    except OSError:
        return []
    body = json.dumps({"experiment_ids": [experiment["experiment_id"]], "max_results": 100}).encode()
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read()).get("runs", [])


def _versions(url: str, name: str) -> list[dict]:
    query = urllib.parse.quote(f"name='{name}'")
    return _get(f"{url}/api/2.0/mlflow/model-versions/search?filter={query}").get("model_versions", [])


def _retries_logged(caplog) -> list[str]:
    """Retries the run's requests went through: MLflow's per-request ones (urllib3) and the registry's own."""
    return [r.getMessage() for r in caplog.records
            if (r.name.startswith("urllib3") and "Retrying" in r.getMessage()) or r.name == "flywheel.retry"]


def test_a_lifecycle_run_survives_the_tracking_server_crashing_while_it_trains(server, fast_params, demo_batch_factory,
                                                                               tmp_path, monkeypatch, caplog):
    from flows.pipeline import run_stages

    running, lock_uri = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", running.url)
    monkeypatch.setenv("FLYWHEEL_REGISTRY_LOCK_URI", lock_uri)
    settings = load_settings(tmp_path / "home", fast_params)
    name = settings.params.registry.model_name
    outcome: dict = {}

    def lifecycle() -> None:
        try:
            outcome["record"] = run_stages(settings, demo_batch_factory(samples=80, seed=21))
        except BaseException as err:  # reported by the main thread
            outcome["error"] = err

    caplog.set_level(logging.WARNING)
    worker = threading.Thread(target=lifecycle, daemon=True)
    worker.start()
    deadline = time.monotonic() + 600
    while not _runs(running.url):  # the training run is open: epochs, the model and the version are still to come
        assert worker.is_alive(), f"the run ended before training began: {outcome}"
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    running.crash_for(DOWN_S)
    worker.join(timeout=900)
    assert not worker.is_alive(), "the run hung after the server came back"
    assert "error" not in outcome, f"the run failed: {outcome.get('error')!r}"
    record = outcome["record"]
    killed, back = running.outages[-1]
    assert record.status == "succeeded" and record.model["version"] == "1" and record.model["champion"] == "1"
    assert datetime.fromisoformat(record.finished_at).timestamp() > back  # it waited the outage out, not finished before
    assert back - killed >= DOWN_S
    versions = _versions(running.url, name)
    assert [v["version"] for v in versions] == ["1"]  # no second version from a resent registration
    alias = _get(f"{running.url}/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion")["model_version"]
    assert alias["version"] == "1" and alias["run_id"] == record.train["mlflow_run_id"]
    assert [r["info"]["status"] for r in _runs(running.url)] == ["FINISHED"]
    assert _retries_logged(caplog), "no request met the outage: the test proved nothing"


def test_registering_while_the_server_is_down_waits_for_it_and_registers_once(server, tmp_path, monkeypatch, caplog):
    """The registration itself meets the outage: a logged model is READY, the server dies, register and
    alias calls retry until it is back; one version, @challenger on it."""
    from models.registry import CHALLENGER, LoggedModel, Registry, register_candidate

    running, _ = server
    registry = Registry(running.url, "outage-register")
    client = registry.client()
    experiment = registry.experiment_id()
    run = client.create_run(experiment)
    model = client.create_logged_model(experiment, source_run_id=run.info.run_id)
    client.finalize_logged_model(model.model_id, "READY")
    crash = threading.Thread(target=running.crash_for, args=(DOWN_S,))
    crash.start()
    time.sleep(0.5)  # the server is dead when registration starts
    caplog.set_level(logging.WARNING)
    started = time.time()
    version = register_candidate(registry, LoggedModel(run.info.run_id, f"models:/{model.model_id}"),
                                 {"training_run": run.info.run_id})
    crash.join()
    killed, back = running.outages[-1]
    assert started < back and version == "1"
    assert [v["version"] for v in _versions(running.url, "outage-register")] == ["1"]
    assert registry.alias_version(CHALLENGER) == "1"
    assert _retries_logged(caplog)
