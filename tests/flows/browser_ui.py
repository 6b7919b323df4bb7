"""What a user sees in a browser after two lifecycle runs: the Evidently dashboard and the MLflow registry.

Collected from tests/flows/test_lifecycle.py (which imports these tests and fixtures), so they
reuse that module's two lifecycle runs instead of running the lifecycle twice more.

Headless Chromium (Debian's `chromium` package, `make install` puts it there) driven by Playwright,
which uses that binary and downloads no browser of its own. Both UIs are single-page apps that
render after their API calls return, so every check waits for text to appear.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
QUIET = {"DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}  # evidently ui phones home without it
UI_WAIT_MS = 60_000  # a cold SPA on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def started(command: list[str], env: dict[str, str] | None = None):
    """A UI server in its own process group (`env` added to ours), stopped after; see `wait_until_answered`."""
    server = subprocess.Popen(command, env={**os.environ, **QUIET, **(env or {})}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # mlflow's job-runner consumers may outlive SIGTERM (STACK_NOTES)
            os.killpg(server.pid, signal.SIGKILL)


def wait_until_answered(server: subprocess.Popen, ready_url: str, name: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(ready_url, timeout=2)
            return
        except OSError:
            assert server.poll() is None, f"{name} exited with {server.returncode}"
            assert time.monotonic() < deadline, f"{name} did not answer {ready_url} within 90 s"
            time.sleep(0.5)


@contextmanager
def serving(command: list[str], ready_url: str, name: str):
    """Start a UI server, wait until `ready_url` answers, stop it after."""
    with started(command) as server:
        wait_until_answered(server, ready_url, name)
        yield


@pytest.fixture  # per test: Playwright's sync API runs an event loop in this thread while it is open, and
# Prefect's sync-compatible calls (State.result) then return coroutines to the module's other tests
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: install Debian's chromium package (make install does)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'")
    with playwright.sync_playwright() as p:
        # Root in a container has no user namespace for Chromium's sandbox.
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def mlflow_ui(two_runs):
    """`mlflow ui` on the module's tracking store, started once for the tests that read it."""
    settings = two_runs[0]
    base = f"http://127.0.0.1:{free_port()}"
    command = [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", settings.tracking_uri,
               "--host", "127.0.0.1", "--port", base.rsplit(":", 1)[1], "--workers", "1"]
    with serving(command, f"{base}/health", "mlflow ui"):
        yield base


@pytest.fixture
def page(browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(UI_WAIT_MS)
    yield page
    page.screenshot(path=str(tmp_path / "last_page.png"), full_page=True)  # left for a failing run's reader


def test_evidently_dashboard_shows_the_latest_batchs_drift(two_runs, page):  # noqa: F811
    from evidently.ui.workspace import Workspace

    settings, _, second = two_runs
    name = settings.params.registry.model_name
    workspace = Workspace.create(str(settings.paths.evidently))
    (project,) = workspace.search_project(name)
    latest = workspace.get_run(project.id, second.monitor["evidently_snapshot"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("evidently")), "ui", "--workspace", str(settings.paths.evidently),
               "--host", "127.0.0.1", "--port", str(port)]
    with serving(command, base, "evidently ui"):
        page.goto(base)
        page.get_by_text(name, exact=True).first.click()
        # The panel's time axis ends at the newest snapshot: the second run's batch.
        panel = page.locator("[class*=MuiCard-root]", has=page.get_by_text("Drift share over time", exact=True)).first
        panel.get_by_text(f"{latest.timestamp:%Y-%m-%d %H:%M:%S}").wait_for()
        assert "drifted share" in panel.inner_text()
        page.get_by_text("Reports", exact=True).click()
        page.get_by_text(second.monitor["evidently_snapshot"], exact=True).wait_for()  # newest first


def test_mlflow_ui_shows_the_registered_model_at_champion(two_runs, mlflow_ui, page):  # noqa: F811
    settings, _, second = two_runs
    name = settings.params.registry.model_name
    page.goto(f"{mlflow_ui}/#/models/{name}")
    row = page.get_by_role("row").filter(has_text=re.compile(r"@\s*champion"))  # the chip reads "@ champion"
    row.first.wait_for()
    assert row.count() == 1
    assert re.findall(r"Version \d+", row.first.inner_text()) == [f"Version {second.model['champion']}"]


def test_mlflow_version_page_shows_the_model_card(two_runs, mlflow_ui, page):  # noqa: F811
    """The version's description renders as the gate's model card: its tables, and the training run's
    plots loaded through the server (models/model_card.py links them relative to the UI)."""
    settings, _, second = two_runs
    name, version = settings.params.registry.model_name, second.model["version"]
    page.goto(f"{mlflow_ui}/#/models/{name}/versions/{version}")
    page.get_by_text("Golden-set metrics per slice", exact=True).wait_for()
    page.get_by_text("PASSED" if second.gate["passed"] else "REJECTED", exact=True).first.wait_for()
    assert page.locator("table", has_text="zero_shot_image_acc").count() >= 2  # checks, metrics, slices
    plots = page.locator("img[src*='get-artifact']")
    plots.first.wait_for()
    assert plots.count() >= 3  # confusion_image.png, recall_at_k.png, embedding_map.png
    page.wait_for_function("Array.from(document.images).filter(i => i.src.includes('get-artifact'))"
                           ".every(i => i.complete && i.naturalWidth > 0)")
