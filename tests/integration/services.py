"""The compose stack's services on this machine, for the integration tests: reachability checks
(tests skip with the reason), a fresh Postgres database per test, and server programs started in
their own process group and stopped with it.

FLYWHEEL_TEST_POSTGRES_URI and FLYWHEEL_TEST_REDIS_URI point the tests at other servers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

POSTGRES_URI = os.environ.get("FLYWHEEL_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URI = os.environ.get("FLYWHEEL_TEST_REDIS_URI", "redis://127.0.0.1:6379/5")  # a database no one else uses


def mlflow_server_env(**extra: str) -> dict[str, str]:
    """This process's environment for an `mlflow server`: telemetry and the server features flywheel never uses
    off (features.env.UNUSED_SERVICES_OFF: MLflow's job runner and 7 huey consumers, 10 processes and 2.0 GB RSS
    for the tree against 2 and 0.5 GB without), even where a value set outside the suite turned one on, plus
    `extra`."""
    from features.env import TELEMETRY_OFF, UNUSED_SERVICES_OFF

    return {**os.environ, **TELEMETRY_OFF, **UNUSED_SERVICES_OFF, **extra}


def postgres_unreachable_reason() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pyproject pins psycopg[binary])"
    try:
        with psycopg.connect(POSTGRES_URI, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as err:
        return f"no PostgreSQL at {POSTGRES_URI} ({str(err).strip().splitlines()[0]}); set FLYWHEEL_TEST_POSTGRES_URI"
    return None


def redis_unreachable_reason() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URI, socket_connect_timeout=3).ping()
    except redis.RedisError as err:
        return f"no Redis at {REDIS_URI} ({err}); set FLYWHEEL_TEST_REDIS_URI"
    return None


def with_database(uri: str, database: str, driver: str = "") -> str:
    """`uri` naming another database, with `+driver` added to the scheme (psycopg, asyncpg) when given."""
    scheme, rest = uri.split("://", 1)
    server = rest.rsplit("/", 1)[0]
    return f"{scheme.split('+')[0]}{'+' + driver if driver else ''}://{server}/{database}"


@contextlib.contextmanager
def fresh_database(purpose: str) -> Iterator[str]:
    """A new, empty Postgres database (plain postgresql:// URI), dropped afterwards with whoever is still connected."""
    import psycopg

    name = f"flywheel_{purpose}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URI, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(POSTGRES_URI, name)
    finally:
        with psycopg.connect(POSTGRES_URI, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_program(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A server program in its own session, so stopping it stops every process it forked."""
    return subprocess.Popen(args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout: float = 120.0) -> None:
    """Until `url` answers 200; a program that exits or stays silent fails with its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_program(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` s: nothing may be left holding the test's database
    (an MLflow job runner's consumers, where one runs, can outlive SIGTERM by up to 30 s: STACK_NOTES)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # children of the group that ignored SIGTERM
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def compose_argv(service: str) -> list[str]:
    """A compose service's `command` as the argument list compose runs (no shell), `${VAR:-default}` as its default."""
    import re
    import shlex

    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    command = compose["services"][service]["command"]
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    return [re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", arg) for arg in argv]


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    """`argv` with `option`'s value replaced (the option must be there)."""
    at = argv.index(option)
    return [*argv[:at + 1], value, *argv[at + 2:]]


@contextlib.contextmanager
def dask_cluster_as_composed(log_dir: Path) -> Iterator[str]:
    """The compose stack's dask-scheduler and dask-worker services, started here with their compose commands
    (host names and ports made local ones); yields the scheduler's address once both answer their health checks."""
    import sys

    from features.env import TELEMETRY_OFF

    dask = str(Path(sys.executable).with_name("dask"))
    port, dashboard, worker_dashboard = free_port(), free_port(), free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = compose_argv("dask-scheduler")
    scheduler = with_option(with_option(with_option(scheduler, "--host", "127.0.0.1"), "--port", str(port)),
                            "--dashboard-address", f"127.0.0.1:{dashboard}")
    worker = compose_argv("dask-worker")
    worker = [address if arg.startswith("tcp://dask-scheduler:") else arg for arg in worker]
    worker = with_option(worker, "--dashboard-address", f"127.0.0.1:{worker_dashboard}")
    assert scheduler[:2] == ["dask", "scheduler"] and worker[:2] == ["dask", "worker"], (scheduler, worker)
    env = {**os.environ, **TELEMETRY_OFF}
    started: list[subprocess.Popen] = []
    try:
        for argv, health, name in ((scheduler, dashboard, "scheduler"), (worker, worker_dashboard, "worker")):
            log = log_dir / f"dask-{name}.log"
            started.append(start_program([dask, *argv[1:]], env, log))
            wait_healthy(started[-1], f"http://127.0.0.1:{health}/health", log, timeout=60)
        # The health check answers once the first worker process is up; the others may join a moment later
        from distributed import Client

        with Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(int(worker[worker.index("--nworkers") + 1]), timeout=60)
        yield address
    finally:
        for process in reversed(started):
            stop_program(process)
