"""Drift alerts reach real local sinks (an HTTP server, an SMTP server) once per cooldown window."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone

import apprise
import pytest
import yaml
from aiosmtpd.controller import Controller

from flows.loop import claim_training, react_to_monitor, send_drift_alert
from flows.pipeline import RunRecord
from flows.settings import load_settings
from monitoring.alerts import build_drift_alert
from tests.conftest import example_params
from tests.integration.sinks import webhook_server


@pytest.fixture
def webhook():
    """A local webhook: every POST body lands in `received`."""
    with webhook_server() as hook:
        yield hook


@pytest.fixture
def smtp_sink():
    """A local SMTP server (aiosmtpd) keeping every message it is sent."""
    messages: list = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            messages.append(envelope)
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd cannot start on port 0: take a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    yield controller.port, messages
    controller.stop()


@pytest.fixture
def loop_settings(tmp_path, webhook, smtp_sink):
    params = example_params()
    params["alerts"] = {"cooldown_hours": 1.0, "sinks": [
        {"name": "hook", "kind": "webhook", "url": webhook[0]},
        {"name": "mail", "kind": "email"},  # URL from the environment, like a real credential
    ]}
    params["retrain"] = {"on_drift": False, "min_interval_hours": 24.0}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    mail_url = f"mailto://127.0.0.1:{smtp_sink[0]}?from=flywheel@example.com&to=ml@example.com&mode=insecure"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLYWHEEL_ALERT_URLS", json.dumps({"mail": mail_url}))
        return load_settings(tmp_path / "home", path)


def _drifted_run(batch: str) -> RunRecord:
    monitor = {"status": "drift", "drift_detected": True, "drifted_share": 0.6, "champion": "2",
               "drifted_columns": ["audio_rms_db", "audio_peak"], "report": "/tmp/r.html"}
    return RunRecord(run_id=f"run-{batch}", source="test", batch_id=batch, monitor=monitor)


def test_a_persisting_drift_alerts_once_per_cooldown(loop_settings, webhook, smtp_sink):
    _, posts = webhook
    _, mails = smtp_sink
    first = react_to_monitor(loop_settings, _drifted_run("batch-1"))
    second = react_to_monitor(loop_settings, _drifted_run("batch-2"))  # same drift, next batch, inside the cooldown
    assert first["alerts"]["sent"] == ["hook", "mail"] and second["alerts"]["suppressed"] == ["hook", "mail"]
    assert len(posts) == 1 and len(mails) == 1
    assert posts[0]["title"] == "flywheel: drift on flywheel-imagebind v2" and "batch-1" in posts[0]["message"]
    assert "audio_rms_db" in mails[0].content.decode() and mails[0].rcpt_tos == ["ml@example.com"]
    assert first["retrain"]["status"] == "off"

    alert = build_drift_alert("flywheel-imagebind", _drifted_run("batch-3").monitor, "batch-3")
    after = send_drift_alert(loop_settings, alert, now=datetime.now(timezone.utc) + timedelta(hours=1, minutes=1))
    assert after["sent"] == ["hook", "mail"] and len(posts) == 2 and len(mails) == 2
    state = json.loads((loop_settings.paths.loop / "alerts.json").read_text())
    assert set(state[alert.fingerprint]) == {"hook", "mail"}


def test_a_failing_sink_is_retried_on_the_next_batch_while_the_other_stays_quiet(loop_settings, webhook, smtp_sink):
    _, posts = webhook
    port, mails = smtp_sink
    down = loop_settings.alert_urls | {"mail": "mailto://127.0.0.1:1?from=a@example.com&to=b@example.com&mode=insecure"}
    broken = type(loop_settings)(**{**loop_settings.__dict__, "alert_urls": down})
    first = react_to_monitor(broken, _drifted_run("batch-1"))
    assert first["alerts"]["sent"] == ["hook"] and first["alerts"]["failed"] == ["mail"]
    second = react_to_monitor(loop_settings, _drifted_run("batch-2"))  # the mail server is reachable again
    assert second["alerts"]["sent"] == ["mail"] and second["alerts"]["suppressed"] == ["hook"]
    assert len(posts) == 1 and len(mails) == 1


def test_a_sink_without_a_url_stops_start_up(tmp_path):
    params = example_params()
    params["alerts"] = {"sinks": [{"name": "ml-slack", "kind": "slack"}]}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"alert sinks \['ml-slack'\] have no url"):
        load_settings(tmp_path / "home", path)


def test_a_slack_webhook_url_is_understood_by_apprise():
    assert apprise.Apprise().add("https://hooks.slack.com/services/T000/B000/XXXXXXXX")


def test_retraining_is_rate_limited(loop_settings):
    now = datetime.now(timezone.utc)
    assert claim_training(loop_settings, "first", now) is None
    refused = claim_training(loop_settings, "second", now + timedelta(hours=23))
    assert refused and "rate-limited" in refused and "first" in refused
    assert claim_training(loop_settings, "third", now + timedelta(hours=24)) is None


def _with_retrain(settings, on_drift: bool):
    params = settings.params.model_copy(update={"retrain": settings.params.retrain.model_copy(update={"on_drift": on_drift})})
    return type(settings)(**{**settings.__dict__, "params": params})


def test_drift_goes_to_the_event_when_one_is_listened_for_else_to_retraining(loop_settings):
    settings = _with_retrain(loop_settings, on_drift=True)
    signalled: list[str] = []

    def listened(_, alert):
        signalled.append(alert.batch_id)
        return True

    assert react_to_monitor(settings, _drifted_run("batch-1"), signal=listened)["retrain"]["status"] == "event"
    assert signalled == ["batch-1"]
    # Nothing listens (ephemeral API, --plain): the monitor retrains itself; a training this window
    # already happened, so the rate limit answers without training again.
    claim_training(settings, "earlier training")
    direct = react_to_monitor(settings, _drifted_run("batch-2"), signal=lambda *_: False)["retrain"]
    assert direct["status"] == "skipped" and "earlier training" in direct["reason"]


def test_a_run_that_trained_counts_as_the_windows_training(loop_settings):
    settings = _with_retrain(loop_settings, on_drift=True)
    run = _drifted_run("batch-1")
    run.train = {"rows": 10}
    outcome = react_to_monitor(settings, run)["retrain"]
    assert outcome["status"] == "skipped" and "lifecycle run run-batch-1" in outcome["reason"]
