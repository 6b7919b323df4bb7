"""The compose stack's MLflow basic-auth, run natively: `mlflow server --app-name basic-auth` with
deploy/mlflow-basic-auth.ini and the admin from the environment, as docker-compose.yml starts it.

A client without credentials is refused; the MLflow client logs in with the names stack.env sets
(MLFLOW_TRACKING_USERNAME/PASSWORD); /health answers without credentials (the compose healthcheck).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import PROJECT
from tests.integration.services import mlflow_server_env

pytestmark = pytest.mark.slow

ADMIN, PASSWORD = "admin", "change-me-mlflow"  # .env.example's placeholders


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_of(url: str, user: str | None = None, password: str | None = None) -> int:
    """The HTTP status of a GET, with basic auth when a user is given; 0 while nothing listens."""
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0  # nothing answers (yet)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """The tracking server with the stack's auth config; only the user store's path differs from compose."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    config = (PROJECT / "deploy" / "mlflow-basic-auth.ini").read_text()
    assert "sqlite:////data/mlflow-auth/basic_auth.db" in config
    (root / "basic_auth.ini").write_text(config.replace("/data/mlflow-auth", str(root)))
    port = free_port()
    env = mlflow_server_env(MLFLOW_AUTH_CONFIG_PATH=str(root / "basic_auth.ini"), MLFLOW_AUTH_ADMIN_USERNAME=ADMIN,
                            MLFLOW_AUTH_ADMIN_PASSWORD=PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY="test-secret")
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [mlflow, "server", "--app-name=basic-auth", "--host=127.0.0.1", f"--port={port}", "--workers=1",
         f"--backend-store-uri=sqlite:///{root / 'mlflow.db'}", f"--artifacts-destination={root / 'artifacts'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # about 12 s idle; minutes on a loaded 2-core machine
        while status_of(f"{url}/health") != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server with basic-auth did not come up:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=40)  # a job runner would outlive SIGTERM by up to 30 s (STACK_NOTES); none runs here
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_requests_without_or_with_wrong_credentials_are_refused_and_health_is_open(auth_server):
    search = f"{auth_server}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status_of(f"{auth_server}/health") == 200
    assert status_of(search) == 401
    assert status_of(search, ADMIN, "wrong") == 401
    assert status_of(search, ADMIN, PASSWORD) == 200


def test_the_mlflow_client_logs_in_with_the_names_stack_env_sets(auth_server):
    script = ("import mlflow; mlflow.set_tracking_uri(%r); "
              "print(mlflow.create_experiment('stack-auth'))") % auth_server
    env = {**os.environ, "MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    env.pop("MLFLOW_TRACKING_URI", None)
    created = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr[-2000:]
    env.pop("MLFLOW_TRACKING_PASSWORD")
    refused = subprocess.run([sys.executable, "-c", script.replace("stack-auth", "anonymous")], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "401" in refused.stderr
