"""Settings built in one process never inherit a store that earlier registry work pointed MLflow at."""

from __future__ import annotations

import os

from flows.settings import load_settings
from flows.stage_config import registry_for

from tests.conftest import PROJECT


def test_a_second_home_gets_its_own_mlflow_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = load_settings(tmp_path / "a", PROJECT / "params.yaml")
    registry_for(first).client()  # points MLflow's fluent API at home a's store
    assert "MLFLOW_TRACKING_URI" not in os.environ
    second = load_settings(tmp_path / "b", PROJECT / "params.yaml")
    assert second.tracking_uri != first.tracking_uri and str(tmp_path / "b") in second.tracking_uri
