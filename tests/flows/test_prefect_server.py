"""The local Prefect server flywheel starts once and reuses across runs."""

from __future__ import annotations

import urllib.request

import pytest

from flows.prefect_server import find_running_server, spawn_server, start_server, stop_server
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
        assert again.process is None and again.wait() == url  # reused, not a second server
    finally:
        assert stop_server(home)
    assert find_running_server(home) is None
    assert not stop_server(home)
