"""The served model follows @champion in a real (embedded) MLflow registry, and batch scoring logs
with the champion: promotion and rollback while requests run, none failing."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from flows.serving import build_app, score_batch
from models.registry import CHAMPION, PREVIOUS
from models.serving.inference_log import load_inference_log
from tests.unit.serving_support import build_registry

POLL_SECONDS = 0.2


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return build_registry(tmp_path_factory.mktemp("home"))


def move_alias(settings, alias: str, version: str) -> None:
    from flows.stage_config import registry_for

    registry = registry_for(settings)
    registry.client().set_registered_model_alias(registry.model_name, alias, version)


def test_promotion_and_rollback_reach_the_api_without_a_restart_or_a_failed_request(settings):
    """Judged on the order of events, not on how long they took, so a busy machine cannot flip it: a request
    that ended before the promotion was served by v1, one that started after the API reported v2 (and ended
    before the rollback) by v2, one that started after it reported v1 again by v1."""
    responses: list[tuple[float, float, int, str | None]] = []  # started, ended, status, model version
    stop = threading.Event()
    reach_s = 120.0  # the alias is polled every POLL_SECONDS; this only ends a test whose API never follows

    def wait_for(client, version: str) -> float:
        deadline = time.monotonic() + reach_s
        while client.get("/model").json()["version"] != version:
            assert time.monotonic() < deadline, f"@champion -> v{version} never reached the API"
            time.sleep(0.05)
        return time.monotonic()

    with TestClient(build_app(settings, poll_seconds=POLL_SECONDS)) as client:
        assert client.get("/model").json()["version"] == "1"

        def hammer() -> None:
            while not stop.is_set():
                started = time.monotonic()
                r = client.post("/classify", json={"modality": "text", "text": "a handwritten digit four"})
                responses.append((started, time.monotonic(), r.status_code, r.json().get("model_version")))

        clients = [threading.Thread(target=hammer) for _ in range(3)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        promoting = time.monotonic()
        move_alias(settings, PREVIOUS, "1")
        move_alias(settings, CHAMPION, "2")  # a promotion
        seen_2 = wait_for(client, "2")
        time.sleep(0.5)
        rolling_back = time.monotonic()
        move_alias(settings, CHAMPION, "1")  # a rollback
        seen_1 = wait_for(client, "1")
        time.sleep(0.5)
        stop.set()
        for thread in clients:
            thread.join()
        info = client.get("/model").json()
    assert len(responses) > 20 and {code for *_, code, _ in responses} == {200}, "a request failed during a swap"
    assert info["alias_version"] == "1"
    assert {v for _, ended, _, v in responses if ended < promoting} == {"1"}
    assert {v for started, ended, _, v in responses if started > seen_2 and ended < rolling_back} == {"2"}
    assert {v for started, _, _, v in responses if started > seen_1} == {"1"}


def test_batch_scoring_logs_the_batch_with_the_champion(settings):
    result = score_batch(settings, "batch-1")
    assert result.model_version == "1" and result.per_modality == {"image": 24, "audio": 18, "text": 16}
    log = load_inference_log(settings.paths.inference)
    batch = log[log["source"] == "batch"]
    assert len(batch) == result.records and set(batch["batch_id"]) == {"batch-1"}
    with pytest.raises(FileNotFoundError, match="no model inputs"):
        score_batch(settings, "batch-404")


def test_cli_score_batch_plain(settings):
    from flows.cli import app

    result = CliRunner().invoke(app, ["score-batch", "batch-1", "batch-404", "--plain", "--home", str(settings.paths.home)])
    assert result.exit_code == 2 and "batch-404" in result.output
    result = CliRunner().invoke(app, ["score-batch", "batch-1", "--plain", "--home", str(settings.paths.home)])
    assert result.exit_code == 0 and "58 records with v1" in result.output, result.output
