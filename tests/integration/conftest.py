"""Servers several integration modules share, started once per session: an `mlflow server` and a
`prefect server start`, both on fresh Postgres databases, as the compose stack runs them.

Each test that uses them works on its own registered model (or flow), so sharing one server
between modules costs no isolation and saves a start (10-20 s each on 2 cores).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from features.env import TELEMETRY_OFF
from tests.integration.services import (
    fresh_database, free_port, mlflow_server_env, postgres_unreachable_reason, start_program, stop_program, wait_healthy,
    with_database,
)

PREFECT = str(Path(sys.executable).with_name("prefect"))


def prefect_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a Prefect program: its own PREFECT_HOME, only the API URL `extra` gives."""
    inherited = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    return {**inherited, **TELEMETRY_OFF, "PREFECT_HOME": str(home), **extra}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a fresh Postgres database; yields (tracking URL, its database URI, artifact destination)."""
    if (reason := postgres_unreachable_reason()) is not None:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("mlflow-server")
    artifacts, log, port = folder / "artifacts", folder / "server.log", free_port()
    with fresh_database("mlflow") as database:
        store = with_database(database, database.rsplit("/", 1)[1], driver="psycopg")
        server = start_program(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", store,
             "--artifacts-destination", str(artifacts), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=mlflow_server_env(), log=log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(server, f"{url}/health", log, timeout=180)  # migrates the empty database first
            yield url, database, artifacts
        finally:
            stop_program(server)


@pytest.fixture(scope="session")
def prefect_on_postgres(tmp_path_factory):
    """`prefect server start` on a fresh Postgres database; yields its API URL.

    Its repossessor looks for lapsed concurrency leases every second instead of every 15 s, so a test of
    a killed lock holder waits for the lease (60 s, the server's minimum) and not also for the loop.
    """
    if (reason := postgres_unreachable_reason()) is not None:
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("prefect-server")
    log, port = home / "server.log", free_port()
    with fresh_database("prefect") as database:
        env = prefect_env(home, PREFECT_API_DATABASE_CONNECTION_URL=with_database(
            database, database.rsplit("/", 1)[1], driver="asyncpg"), PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS="1")
        server = start_program([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log)
        try:
            api = f"http://127.0.0.1:{port}/api"
            wait_healthy(server, f"{api}/health", log, timeout=180)  # migrates the empty database first
            yield api
        finally:
            stop_program(server)
