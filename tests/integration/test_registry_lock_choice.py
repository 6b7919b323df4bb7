"""The champion lock an HTTP tracking URI gets (flows/registry_locks.py), on the session's real `mlflow
server` and Prefect server (tests/integration/conftest.py):
- no Prefect server: a file lock under FLYWHEEL_HOME. Two processes promoting at once on one state folder:
  one wins, the other gets StaleChampion; a holder killed with SIGKILL frees it at once.
- PREFECT_API_URL set: a Prefect global concurrency limit as well. A holder is SIGKILLed while holding it
  (its slot stays taken until the lease lapses), then two promoters with separate FLYWHEEL_HOMEs (two
  machines: no file lock shared) promote at once: one wins, and the dead holder wedged nothing.
- a lock setting that cannot work stops `flywheel run` before ingest.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from features.env import TELEMETRY_OFF
from flows.registry_locks import check_registry_lock, limit_name
from flows.settings import load_settings
from flows.stage_config import registry_for
from models.registry import promote
from models.registry_lock import champion_lock
from tests.conftest import PROJECT, example_params
from tests.integration.promoters import assert_one_won, start_promoters

pytestmark = pytest.mark.slow

HELD_SECONDS = 2.0  # how long the test holds the lock while both promoters wait on it
# A promoter that takes the lock as `flywheel promote` would, prints "held" and waits to be killed.
HOLD = """
import sys, time
from pathlib import Path
from flows.registry_locks import choose_registry_lock
from flows.settings import load_settings
settings = load_settings(Path(sys.argv[1]), Path(sys.argv[2]))
with choose_registry_lock(settings)(settings.params.registry.model_name):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def on_the_server(mlflow_server, tmp_path, monkeypatch):
    """Only MLFLOW_TRACKING_URI set, a registered model of its own with 3 bare versions, v1 @champion;
    yields the params file (each test sets or unsets PREFECT_API_URL before loading settings)."""
    url, _, _ = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    for name in ("FLYWHEEL_REGISTRY_LOCK_URI", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    raw = example_params()
    raw["registry"]["model_name"] = f"lock-choice-{uuid.uuid4().hex[:8]}"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    registry = registry_for(load_settings(tmp_path / "setup-home", params))
    client = registry.client()
    client.create_registered_model(registry.model_name)
    run = client.create_run(registry.experiment_id())
    for _ in range(3):
        client.create_model_version(registry.model_name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    promote(registry, "1", expected_champion=None)
    return params


def hold_and_kill(home: Path, params: Path) -> None:
    """A promoter that takes the lock and is killed (SIGKILL) while it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(home), str(params)], cwd=PROJECT, stdout=subprocess.PIPE,
                              env={**os.environ, **TELEMETRY_OFF})
    try:
        assert holder.stdout.readline() == b"held\n"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)


def test_file_lock_under_flywheel_home_serialises_promoters_and_a_killed_holder_frees_it(on_the_server, tmp_path):
    params, home = on_the_server, tmp_path / "home"
    choice = check_registry_lock(load_settings(home, params))
    assert choice.kind == "home" and choice.uri == (home / "state" / "locks").as_uri()
    hold_and_kill(home, params)
    name = load_settings(home, params).params.registry.model_name
    # Free at once after the kill; the test holds it, so both promoters are inside promote() waiting on it
    # when it is released: the race the lock exists for, every time rather than by luck of timing.
    with champion_lock(choice.uri, name, timeout_s=30):
        workers, ready, results = start_promoters([home, home], params)
        for _ in workers:
            ready.get(timeout=240)
        with pytest.raises(queue.Empty):
            results.get(timeout=HELD_SECONDS)  # neither got past the lock while it was held
    assert_one_won(workers, results, registry_for(load_settings(home, params)))


def test_prefect_limit_serialises_promoters_of_two_machines_after_a_holder_was_killed(
        on_the_server, prefect_on_postgres, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    params = on_the_server
    monkeypatch.setenv("PREFECT_API_URL", prefect_on_postgres)
    homes = [tmp_path / f"machine-{n}" for n in range(3)]
    settings = load_settings(homes[0], params)
    choice = check_registry_lock(settings)  # creates the limit (limit 1) on the server
    assert (choice.kind, choice.prefect_api_url) == ("prefect", prefect_on_postgres)
    name = limit_name(settings.params.registry.model_name)

    def active_slots() -> int:
        with temporary_settings({PREFECT_API_URL: prefect_on_postgres}), get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
        assert limit.limit == 1
        return limit.active_slots

    hold_and_kill(homes[0], params)
    assert active_slots() == 1  # the dead holder's slot is still taken: its lease has not lapsed yet
    # Each promoter has its own FLYWHEEL_HOME, so only the Prefect limit is shared; both wait on the dead
    # holder's slot until its lease lapses, then exactly one gets it.
    workers, _, results = start_promoters(homes[1:], params)
    assert_one_won(workers, results, registry_for(load_settings(homes[1], params)))
    assert active_slots() == 0  # released by the winner and the loser alike


@pytest.mark.parametrize("lock_uri, named", [
    ("redis://127.0.0.1:6379/0", "unknown scheme 'redis'"),
    ("file:///no/such/folder", "/no/such/folder does not exist"),
    ("postgresql+asyncpg://u@127.0.0.1/mlflow", "driver 'asyncpg', which cannot lock"),
])
def test_a_lock_setting_that_cannot_work_stops_flywheel_run_before_ingest(lock_uri, named, fast_params,
                                                                         demo_batch_factory, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("FLYWHEEL_REGISTRY_LOCK_URI", lock_uri)
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["run", "--plain", "--source", str(demo_batch_factory(samples=20, seed=3)),
                                      "--home", str(home), "--params", str(fast_params)])
    output = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 2, output
    assert f"FLYWHEEL_REGISTRY_LOCK_URI='{lock_uri}'" in output and named in output and "accepted: postgresql://" in output
    assert not (home / "lake").exists()  # nothing was ingested


def test_an_unreachable_lock_database_stops_the_run_before_ingest(fast_params, demo_batch_factory, tmp_path,
                                                                   monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.integration.services import free_port

    monkeypatch.setenv("FLYWHEEL_REGISTRY_LOCK_URI", f"postgresql://nobody@127.0.0.1:{free_port()}/mlflow")
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["run", "--plain", "--source", str(demo_batch_factory(samples=20, seed=3)),
                                      "--home", str(home), "--params", str(fast_params)])
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and "cannot reach the registry lock's database" in output, output  # a setting
    assert not (home / "lake").exists() and not (home / "runs").exists()  # stopped before any run began
