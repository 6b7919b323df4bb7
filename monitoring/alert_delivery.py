"""Sending alerts (drift, rejected batches) through apprise, once per sink per cooldown window, with the state in a JSON file.

The read-decide-send-write cycle holds a file lock, so two monitor runs finishing at once
(the hourly schedule and an ingest) send one alert, not two; the file is replaced atomically,
so a crash mid-write leaves the previous state, never half a file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from filelock import FileLock

from features.io import save_json
from monitoring.alerts import Alert, AlertState, apprise_url, due_sinks, mark_sent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sink:
    name: str
    kind: str  # webhook | slack | email
    url: str  # may carry credentials: never logged


@dataclass
class AlertOutcome:
    fingerprint: str
    sent: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)  # sent within the cooldown already
    failed: list[str] = field(default_factory=list)  # due again on the next drifted batch

    def to_dict(self) -> dict[str, object]:
        return {"fingerprint": self.fingerprint, "sent": self.sent, "suppressed": self.suppressed, "failed": self.failed}


def load_alert_state(path: Path) -> AlertState:
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def save_alert_state(path: Path, state: AlertState) -> None:
    save_json(path, state)  # atomic: a temporary file renamed over the old one


def send_to_sink(sink: Sink, title: str, body: str) -> bool:
    """One notification through apprise; False (and a log line naming the sink) when it did not go out."""
    import apprise

    notifier = apprise.Apprise()
    if not notifier.add(apprise_url(sink.kind, sink.url)):
        log.warning("alert sink %r: apprise does not accept its URL", sink.name)
        return False
    ok = bool(notifier.notify(title=title, body=body, notify_type=apprise.NotifyType.WARNING))
    if not ok:
        log.warning("alert sink %r: sending failed", sink.name)
    return ok


def deliver_alert(alert: Alert, sinks: list[Sink], state_path: Path, cooldown: timedelta,
                  now: datetime) -> AlertOutcome:
    """Send `alert` to every sink that has not sent its fingerprint within `cooldown`; record what went out."""
    outcome = AlertOutcome(alert.fingerprint)
    by_name = {sink.name: sink for sink in sinks}
    state_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(state_path) + ".lock"):
        state = load_alert_state(state_path)
        due = due_sinks(state, alert.fingerprint, list(by_name), now, cooldown)
        outcome.suppressed = [name for name in by_name if name not in due]
        for name in due:
            (outcome.sent if send_to_sink(by_name[name], alert.title(), alert.body()) else outcome.failed).append(name)
        if outcome.sent:
            save_alert_state(state_path, mark_sent(state, alert.fingerprint, outcome.sent, now, cooldown))
    return outcome
