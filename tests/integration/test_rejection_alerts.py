"""A rejected batch's alert on a real webhook: what it names, once per cooldown for the same rejection, and
never a retraining, whatever `retrain.on_drift` says (the batch is not in the training window)."""

from __future__ import annotations

import pytest
import yaml

from flows.loop import react_to_monitor
from flows.pipeline import RunRecord
from flows.settings import load_settings
from tests.conftest import example_params
from tests.integration.sinks import webhook_server

REJECTION = {"stage": "validate", "expectation": "expect_column_mean_to_be_between(audio_seconds)",
             "observed": 0.8067, "bound": 0.7355, "sample_ids": ["d13-00068"],
             "detail": "batch 'b' rejected by clean_rows_reference: audio_seconds observed 0.8067, above the bound 0.7355"}


@pytest.fixture
def hook_settings(tmp_path):
    with webhook_server() as (url, posts):
        params = example_params()
        params["alerts"] = {"cooldown_hours": 1.0, "sinks": [{"name": "hook", "kind": "webhook", "url": url}]}
        params["retrain"] = {"on_drift": True, "min_interval_hours": 24.0}
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        yield load_settings(tmp_path / "home", path), posts


def _rejected_run(batch: str, monitor: dict) -> RunRecord:
    return RunRecord(run_id=f"run-{batch}", source="test", batch_id=batch, monitor=monitor, rejection=dict(REJECTION))


def test_a_rejection_alerts_once_per_cooldown_and_never_retrains(hook_settings):
    settings, posts = hook_settings
    drifted = {"status": "drift", "drift_detected": True, "champion": "3", "drifted_share": 0.24,
               "drifted_checks": ["data_drift", "embedding_drift"], "drifted_columns": ["aud_seconds"]}
    first = react_to_monitor(settings, _rejected_run("batch-1", drifted), signal=lambda *_: pytest.fail("no drift event"))
    again = react_to_monitor(settings, _rejected_run("batch-2", drifted))  # the same source failing again
    assert first["rejected"] and first["alerts"]["sent"] == ["hook"] and again["alerts"]["suppressed"] == ["hook"]
    assert first["retrain"]["status"] == again["retrain"]["status"] == "not_started"
    assert not (settings.paths.loop / "retrain.json").exists()  # no training was claimed
    (post,) = posts
    assert post["title"] == f"flywheel: batch batch-1 rejected by validate ({settings.params.registry.model_name})"
    for text in (REJECTION["expectation"], "observed 0.8067", "bound 0.7355", "v3", "data_drift, embedding_drift", "aud_seconds"):
        assert text in post["message"], text


def test_a_rejection_before_any_champion_or_with_a_failed_check_is_still_alerted_and_says_so(hook_settings):
    settings, posts = hook_settings
    react_to_monitor(settings, _rejected_run("batch-1", {"status": "no_champion", "batch": "batch-1"}))
    assert "No champion yet" in posts[-1]["message"]
    failed = {"status": "failed", "batch": "batch-2", "error": "OSError: disk full"}
    other = {**REJECTION, "expectation": "expect_table_row_count_to_be_between"}
    outcome = react_to_monitor(settings, RunRecord(run_id="r2", source="t", batch_id="batch-2", monitor=failed, rejection=other))
    assert outcome["alerts"]["sent"] == ["hook"] and "drift check of the batch failed: OSError: disk full" in posts[-1]["message"]
