"""The closed loop after a drift check: alert once per cooldown, then start retraining, rate-limited.

Prefect-free, so `flywheel run --plain` closes the loop too: there the reaction retrains
directly. The Prefect flows (`flows.loop_flows`) pass a `signal` that emits a drift event
instead, which the retraining deployment's trigger answers.

A batch a data stage rejected is alerted as a rejection (the expectation, observed value and bound,
with what monitoring found), and neither emits a drift event nor retrains: the batch never enters
the training window, so a retraining would learn from the same window the champion did and answer
nothing; a broken or shifted source needs a person, which is what the alert is for.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from filelock import FileLock

from flows.pipeline import RunRecord, StageCall, call_directly, run_monitor_stages, run_retrain_stages
from flows.settings import Settings
from features.io import save_json
from monitoring.alert_delivery import Sink, deliver_alert
from monitoring.alerts import Alert, DriftAlert, build_drift_alert, build_rejection_alert

log = logging.getLogger(__name__)

ALERT_STATE = "alerts.json"
RETRAIN_STATE = "retrain.json"

# Tells the retraining deployment about a drift; False when nothing listens (no served deployment).
DriftSignal = Callable[[Settings, DriftAlert], bool]


def alert_sinks(settings: Settings) -> list[Sink]:
    return [Sink(s.name, s.kind, settings.alert_urls[s.name]) for s in settings.params.alerts.sinks]


REJECTED_NO_RETRAIN = ("the batch was rejected: it never enters the training window, so retraining on the window "
                      "would not answer it; no drift event either")
NO_TRAINING_HERE = ("this command does not train: `flywheel retrain` does, or the flywheel-retrain deployment "
                    "(`flywheel schedule`), which answers the drift event")


def send_drift_alert(settings: Settings, alert: Alert, now: datetime | None = None) -> dict[str, Any]:
    outcome = deliver_alert(alert, alert_sinks(settings), settings.paths.loop / ALERT_STATE,
                            timedelta(hours=settings.params.alerts.cooldown_hours), now or datetime.now(timezone.utc))
    return outcome.to_dict()


def claim_training(settings: Settings, reason: str, now: datetime | None = None) -> str | None:
    """Record a training start unless one started within `retrain.min_interval_hours`; returns None when
    claimed, else why not. Check and record hold a lock, so two triggers at once train once."""
    now = now or datetime.now(timezone.utc)
    path = settings.paths.loop / RETRAIN_STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    interval = timedelta(hours=settings.params.retrain.min_interval_hours)
    with FileLock(str(path) + ".lock"):
        last = json.loads(path.read_text()) if path.exists() else None
        if last is not None and now - datetime.fromisoformat(last["started_at"]) < interval:
            return (f"rate-limited: a training started at {last['started_at']} ({last['reason']}); "
                    f"retrain.min_interval_hours is {interval.total_seconds() / 3600:g}")
        save_json(path, {"started_at": now.isoformat(), "reason": reason})
    return None


def retrain(settings: Settings, reason: str, call: StageCall = call_directly, run_id: str | None = None) -> dict[str, Any]:
    """Train on the current window → register → gate, unless rate-limited; returns what happened."""
    refused = claim_training(settings, reason)
    if refused:
        log.warning("retraining skipped: %s", refused)
        return {"status": "skipped", "reason": refused}
    record = run_retrain_stages(settings, reason, call=call, run_id=run_id)
    return {"status": record.status, "run_id": record.run_id, "model": record.model,
            "gate_passed": record.gate.get("passed"), "summary": str(settings.paths.runs / record.run_id / "summary.json")}


def react_to_monitor(settings: Settings, record: RunRecord, signal: DriftSignal | None = None,
                     call: StageCall = call_directly, train_on_drift: bool = True) -> dict[str, Any]:
    """After a drift check: alert (deduplicated), then retraining by `signal` or, without one, directly
    (unless `train_on_drift` is False: `flywheel ingest` never trains). A rejected batch
    (`record.rejection`) is alerted as a rejection and retrains nothing.

    A run that trained a model already counts as this window's training, so the drift it finds
    does not retrain the same data again at once.
    """
    if record.train:
        claim_training(settings, f"lifecycle run {record.run_id}")
    model = settings.params.registry.model_name
    if record.rejection:
        rejected = build_rejection_alert(model, record.rejection, record.monitor, record.batch_id or "")
        return {"drift": bool(record.monitor.get("drift_detected")), "rejected": True,
                "alerts": send_drift_alert(settings, rejected), "retrain": {"status": "not_started", "reason": REJECTED_NO_RETRAIN}}
    alert = build_drift_alert(model, record.monitor, record.batch_id or "")
    if alert is None:
        return {"drift": False}
    reaction: dict[str, Any] = {"drift": True, "alerts": send_drift_alert(settings, alert)}
    if not settings.params.retrain.on_drift:
        reaction["retrain"] = {"status": "off", "reason": "retrain.on_drift is false"}
    elif signal is not None and signal(settings, alert):
        reaction["retrain"] = {"status": "event", "reason": "drift event emitted; the retraining deployment answers it"}
    elif not train_on_drift:
        reaction["retrain"] = {"status": "not_started", "reason": NO_TRAINING_HERE}
    else:
        reaction["retrain"] = retrain(settings, f"drift on batch {alert.batch_id} ({alert.fingerprint})", call=call)
    return reaction


def latest_batch(settings: Settings) -> str | None:
    """The most recently ingested batch with model inputs: what the hourly monitor checks."""
    from features.ingest import list_ingested_batches

    batches = [b for b in list_ingested_batches(settings.paths.lake_raw) if settings.paths.batch_inputs(b).exists()]
    return batches[-1] if batches else None


def run_monitor(settings: Settings, batch_id: str | None, call: StageCall = call_directly,
                signal: DriftSignal | None = None, run_id: str | None = None) -> RunRecord:
    """A drift check of one ingested batch (default: the latest) and the loop's reaction, as a run summary."""
    batch_id = batch_id or latest_batch(settings)
    if batch_id is None:
        raise ValueError(f"no ingested batch under {settings.paths.lake_raw}: nothing to monitor")
    return run_monitor_stages(settings, batch_id, call, run_id, react=reaction(signal, call))


def reaction(signal: DriftSignal | None, call: StageCall = call_directly, train_on_drift: bool = True) -> StageCall:
    """The pipeline's `react` stage: `react_to_monitor` with this driver's signal and stage call."""

    def react(settings: Settings, record: RunRecord) -> dict[str, Any]:
        return react_to_monitor(settings, record, signal, call, train_on_drift)

    return react
