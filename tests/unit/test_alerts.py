"""Alert deduplication and cooldown, and which URLs a sink kind accepts (pure logic)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from monitoring.alerts import DriftAlert, apprise_url, build_drift_alert, due_sinks, mark_sent

NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def _monitor(version="3", columns=("audio_rms_db", "image_contrast"), drift=True):
    return {"drift_detected": drift, "champion": version, "drifted_columns": list(columns), "drifted_share": 0.5}


def test_the_same_drift_in_another_batch_has_the_same_fingerprint():
    first = build_drift_alert("m", _monitor(), "batch-1")
    second = build_drift_alert("m", _monitor(columns=("image_contrast", "audio_rms_db")), "batch-2")
    assert first.fingerprint == second.fingerprint
    assert build_drift_alert("m", _monitor(version="4"), "batch-2").fingerprint != first.fingerprint
    assert build_drift_alert("m", _monitor(columns=("audio_rms_db",)), "batch-2").fingerprint != first.fingerprint
    embedding = {**_monitor(), "drifted_checks": ["embedding_drift"]}
    assert build_drift_alert("m", embedding, "batch-2").fingerprint != first.fingerprint


def test_no_alert_without_drift():
    assert build_drift_alert("m", _monitor(drift=False), "b") is None
    assert build_drift_alert("m", {"status": "no_champion"}, "b") is None


def test_a_sink_sends_once_per_cooldown_and_a_failed_sink_stays_due():
    fp = build_drift_alert("m", _monitor(), "b").fingerprint
    state = mark_sent({}, fp, ["hook"], NOW, HOUR)
    assert due_sinks(state, fp, ["hook", "mail"], NOW + 0.5 * HOUR, HOUR) == ["mail"]  # mail failed: still due
    assert due_sinks(state, fp, ["hook"], NOW + HOUR, HOUR) == ["hook"]
    assert due_sinks(state, "other", ["hook"], NOW, HOUR) == ["hook"]


def test_old_entries_are_dropped_from_the_state():
    state = mark_sent({}, "old", ["hook"], NOW, HOUR)
    state = mark_sent(state, "new", ["hook"], NOW + 3 * HOUR, HOUR)
    assert set(state) == {"new"}


def test_webhook_urls_become_apprise_json_posts_and_wrong_schemes_are_named():
    assert apprise_url("webhook", "http://host:9000/hook") == "json://host:9000/hook"
    assert apprise_url("webhook", "https://host/hook") == "jsons://host/hook"
    assert apprise_url("email", "mailto://localhost:25?to=a@b") == "mailto://localhost:25?to=a@b"
    with pytest.raises(ValueError, match="email sink needs a URL starting with one of"):
        apprise_url("email", "http://user:secret@host")
    with pytest.raises(ValueError, match="unknown alert sink kind 'pager'"):
        apprise_url("pager", "http://host")


def test_alert_text_names_the_model_version_and_columns():
    alert = DriftAlert("m", "3", "batch-9", ("audio_rms_db",), 0.25, report="/r.html",
                       drifted_checks=("data_drift", "embedding_drift"), findings=("audio embeddings drifted",))
    assert alert.title() == "flywheel: drift on m v3"
    for text in ("batch-9", "audio_rms_db", "/r.html", "embedding_drift", "audio embeddings drifted"):
        assert text in alert.body()
