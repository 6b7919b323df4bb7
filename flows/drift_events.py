"""Drift as a Prefect event: what the retraining deployment's trigger listens for.

One resource per registered model (`flywheel.model.<name>`), so a trigger (or a Prefect
automation someone adds in the UI) can follow one model's drift and nothing else.
"""

from __future__ import annotations

import logging

from flows.settings import Settings
from monitoring.alerts import DriftAlert

log = logging.getLogger(__name__)

DRIFT_EVENT = "flywheel.drift.detected"
RETRAIN_FLOW = "flywheel-retrain"  # flow and deployment name: `flywheel-retrain/flywheel-retrain`


def model_resource_id(model_name: str) -> str:
    return f"flywheel.model.{model_name}"


def retrain_deployment_exists(home: str | None = None) -> bool:
    """Whether the retraining deployment is registered on this API (`flywheel schedule`); on an
    ephemeral API nothing is, and a drift event would go unanswered. With `home`: registered for that
    FLYWHEEL_HOME (or for whichever the worker has: prefect.yaml leaves `home` null), since the machine's
    local server is shared, and another home's retraining must not answer this home's drift."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"{RETRAIN_FLOW}/{RETRAIN_FLOW}")
        except ObjectNotFound:
            return False
    owner = (deployment.parameters or {}).get("home")
    return home is None or owner is None or owner == home


def emit_drift_event(settings: Settings, alert: DriftAlert) -> bool:
    """Emit the drift event when the retraining deployment is there to answer it; False otherwise
    (the caller then retrains itself)."""
    from prefect.events import emit_event

    if not retrain_deployment_exists(str(settings.paths.home)):
        log.info("no %s deployment for this home on this Prefect API: retraining runs in this flow instead", RETRAIN_FLOW)
        return False
    model = settings.params.registry.model_name
    emitted = emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": model_resource_id(model), "prefect.resource.name": model,
                  "flywheel.model.version": alert.model_version},
        payload={"batch_id": alert.batch_id, "fingerprint": alert.fingerprint, "drifted_share": alert.drifted_share,
                 "drifted_columns": list(alert.drifted_columns)},
    )
    return emitted is not None
