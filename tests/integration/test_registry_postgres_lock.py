"""The champion lock on a real PostgreSQL server (the compose stack's MLflow database): with
FLYWHEEL_REGISTRY_LOCK_URI=postgresql://… two processes promoting against the same champion are
serialised by the advisory lock alone (no file lock is taken), one wins and the other gets StaleChampion.

The MLflow store itself stays the embedded SQLite one: only the lock is under test. Set
FLYWHEEL_TEST_POSTGRES_URI to point at another server; the tests skip when none answers.
"""

from __future__ import annotations

import queue
import uuid

import pytest
import yaml

from flows.settings import load_settings
from flows.stage_config import registry_for
from models.registry import promote
from models.registry_lock import LockUnavailable, champion_lock, lock_file_for
from tests.conftest import example_params
from tests.integration.promoters import assert_one_won, start_promoters
from tests.integration.services import POSTGRES_URI, postgres_unreachable_reason

HELD_SECONDS = 2.0  # how long the test holds the lock while both promoters wait on it


pytestmark = pytest.mark.skipif((reason := postgres_unreachable_reason()) is not None, reason=reason or "")


@pytest.fixture
def pg_settings(tmp_path, monkeypatch):
    """Settings whose lock is the Postgres advisory lock, with a registered model of 3 bare versions
    and v1 as champion. The model name is unique per test so parallel runs never share a lock key."""
    monkeypatch.setenv("FLYWHEEL_REGISTRY_LOCK_URI", POSTGRES_URI)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = example_params()
    raw["registry"]["model_name"] = f"pg-cas-{uuid.uuid4().hex[:8]}"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    settings = load_settings(tmp_path / "home", params)
    assert settings.registry_lock_uri == POSTGRES_URI  # read from the environment, as a deployment sets it
    registry = registry_for(settings)
    client = registry.client()
    client.create_registered_model(registry.model_name)
    source = registry.artifact_root.absolute().as_uri()
    for _ in range(3):
        client.create_model_version(registry.model_name, source)
    promote(registry, "1", expected_champion=None)
    return settings


def test_two_processes_promoting_at_once_are_serialised_by_the_advisory_lock(pg_settings, tmp_path):
    registry = registry_for(pg_settings)
    params = tmp_path / "params.yaml"
    assert lock_file_for(registry.lock_uri, registry.model_name) is None  # no file lock: Postgres alone decides
    # The test takes the lock first, so both promoters are inside promote() waiting on the same key
    # when it is released: the race the lock exists for, every time rather than by luck of timing.
    with champion_lock(registry.lock_uri, registry.model_name):
        workers, ready, results = start_promoters([pg_settings.paths.home] * 2, params)
        for _ in workers:
            ready.get(timeout=120)
        with pytest.raises(queue.Empty):
            results.get(timeout=HELD_SECONDS)  # neither got past the lock while it was held
    winner, loser = assert_one_won(workers, results, registry)
    assert registry.version_tags(winner)["promotion.replaced"] == "1"
    assert "promotion.at" not in registry.version_tags(loser)


def test_a_held_advisory_lock_times_out_with_lock_unavailable_and_is_free_after(pg_settings):
    registry = registry_for(pg_settings)
    with champion_lock(registry.lock_uri, registry.model_name):
        with pytest.raises(LockUnavailable, match="not granted in 1 s"):
            with champion_lock(registry.lock_uri, registry.model_name, timeout_s=1.0):
                pass  # pragma: no cover - never entered
        with pytest.raises(LockUnavailable):  # lock_timeout = 0 is "wait forever" in Postgres: must not hang
            with champion_lock(registry.lock_uri, registry.model_name, timeout_s=0.0):
                pass  # pragma: no cover - never entered
    with champion_lock(registry.lock_uri, registry.model_name, timeout_s=1.0):
        pass  # released by the holder and not left behind by the refused waiters


def test_the_short_postgres_scheme_takes_the_same_lock(pg_settings):
    """`postgres://` (what many hosts hand out) names no SQLAlchemy dialect; it must lock, not crash."""
    registry = registry_for(pg_settings)
    short = "postgres://" + POSTGRES_URI.split("://", 1)[1]
    with champion_lock(short, registry.model_name):
        with pytest.raises(LockUnavailable):
            with champion_lock(registry.lock_uri, registry.model_name, timeout_s=0.5):
                pass  # pragma: no cover - never entered
