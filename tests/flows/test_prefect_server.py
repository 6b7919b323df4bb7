"""The machine's local Prefect server: started once, reused by every home, runs told apart by tags."""

from __future__ import annotations

import os
import urllib.request

import pytest

from flows.prefect_server import find_running_server, spawn_server, start_server, stop_server
from flows.settings import load_settings
from tests.conftest import PROJECT
from tests.integration.services import free_port

pytestmark = pytest.mark.slow


def test_server_is_started_once_found_again_and_stopped(tmp_path):
    home = tmp_path / "prefect"
    assert find_running_server(home) is None
    url = start_server(home, port=free_port())
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            assert response.status == 200
        assert find_running_server(home) == url
        again = spawn_server(home)
        assert not again.spawned and again.wait() == url  # reused, not a second server
    finally:
        assert stop_server(home)
    assert find_running_server(home) is None
    assert not stop_server(home)


def test_two_homes_share_one_server_and_their_runs_carry_their_home_and_run_id(tmp_path, monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.prefect_runtime import prepare_prefect, run_tags

    monkeypatch.setenv("FLYWHEEL_PREFECT_SERVER_HOME", str(tmp_path / "machine"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    homes = [load_settings(tmp_path / name, PROJECT / "params.yaml") for name in ("home-a", "home-b")]

    @flow(name="tag-probe")
    def probe() -> None:
        return None

    urls = []
    try:
        for settings, run_id in zip(homes, ("run-a", "run-b")):
            monkeypatch.delenv("PREFECT_API_URL", raising=False)
            monkeypatch.setenv("PREFECT_HOME", str(settings.paths.prefect))  # each home's own client profile
            prepare_prefect(settings, server=True).wait()
            urls.append(os.environ["PREFECT_API_URL"])
            with temporary_settings({PREFECT_API_URL: urls[-1]}), run_tags(settings, run_id):
                probe()
        assert urls[0] == urls[1]  # the second home found the first one's server
        with temporary_settings({PREFECT_API_URL: urls[0]}), get_client(sync_client=True) as client:
            for settings, run_id in zip(homes, ("run-a", "run-b")):
                tagged = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[f"home:{settings.paths.home}"])))
                assert [set(run.tags) for run in tagged] == [{"flywheel", f"home:{settings.paths.home}", f"run:{run_id}"}]
    finally:
        assert stop_server(tmp_path / "machine")
