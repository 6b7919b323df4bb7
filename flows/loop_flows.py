"""The loop's Prefect flows and their deployments: ingest and retrain daily, monitor hourly, and
retraining on every drift event.

Each flow takes `home` and `params` (paths as text, None: the environment's) because a
deployment's run starts in a fresh process that only has its parameters and environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from flows.drift_events import DRIFT_EVENT, RETRAIN_FLOW, emit_drift_event, model_resource_id
from flows.lifecycle import call_as_task, flywheel_run_name, run_id_of_this_flow_run
from flows.loop import reaction, retrain, run_monitor
from flows.pipeline import run_ingest_stages
from flows.settings import Settings, load_settings

MONITOR_FLOW = "flywheel-monitor"
INGEST_FLOW = "flywheel-ingest"


def _settings(home: str | None, params: str | None) -> Settings:
    return load_settings(Path(home) if home else None, Path(params) if params else None)


# Each flow run is named after flywheel's run id (flows.lifecycle.flywheel_run_name), the one its summary has.
@flow(name=RETRAIN_FLOW, log_prints=True, flow_run_name=flywheel_run_name)
def retrain_flow(reason: str = "schedule", home: str | None = None, params: str | None = None) -> dict[str, Any]:
    """Train on the current window → register → gate, at most once per `retrain.min_interval_hours`."""
    return retrain(_settings(home, params), reason, call=call_as_task, run_id=run_id_of_this_flow_run(None))


@flow(name=MONITOR_FLOW, log_prints=True, flow_run_name=flywheel_run_name)
def monitor_flow(batch_id: str | None = None, home: str | None = None, params: str | None = None) -> dict[str, Any]:
    """Drift of a batch (default: the latest) against the champion's window; alerts and a drift event on drift."""
    record = run_monitor(_settings(home, params), batch_id, call=call_as_task, signal=emit_drift_event,
                         run_id=run_id_of_this_flow_run(None))
    return {"run_id": record.run_id, "monitor": record.monitor, "loop": record.loop}


@flow(name=INGEST_FLOW, log_prints=True, flow_run_name=flywheel_run_name)
def ingest_flow(source: str, home: str | None = None, params: str | None = None, run_id: str | None = None,
                train_on_drift: bool = True) -> dict[str, Any]:
    """A landing batch through the data stages, then its drift check (training is the retrain flow's job:
    the drift event starts it; with no retraining deployment to answer, this flow retrains itself unless
    `train_on_drift` is False, as for `flywheel ingest`). A rejected batch is monitored, alerted, and fails."""
    from flows.dask_cluster import check_cluster_of
    from flows.run_links import prefect_links

    settings = _settings(home, params)
    check_cluster_of(settings)  # before any stage, as lifecycle_flow
    record = run_ingest_stages(settings, source, call=call_as_task, run_id=run_id_of_this_flow_run(run_id),
                               react=reaction(emit_drift_event, call_as_task, train_on_drift), links=prefect_links())
    return {"run_id": record.run_id, "batch_id": record.batch_id, "monitor": record.monitor, "loop": record.loop}


def build_deployments(settings: Settings, params_path: Path | None = None) -> list[RunnerDeployment]:
    """The three scheduled deployments of params.yaml `schedule:`; retraining also answers drift events."""
    schedule, model = settings.params.schedule, settings.params.registry.model_name
    where = {"home": str(settings.paths.home), "params": str(params_path.absolute()) if params_path else None}

    def cron(expression: str) -> list:
        return [Cron(expression, timezone=schedule.timezone)]

    on_drift = DeploymentEventTrigger(
        name="retrain-on-drift", expect={DRIFT_EVENT}, match={"prefect.resource.id": model_resource_id(model)},
        parameters={"reason": "drift on batch {{ event.payload.batch_id }} ({{ event.payload.fingerprint }})"},
        enabled=settings.params.retrain.on_drift)
    return [
        ingest_flow.to_deployment(INGEST_FLOW, schedules=cron(schedule.ingest),
                                  parameters={"source": schedule.ingest_source, **where}, tags=["flywheel"]),
        retrain_flow.to_deployment(RETRAIN_FLOW, schedules=cron(schedule.retrain), parameters=where,
                                   triggers=[on_drift], concurrency_limit=1, tags=["flywheel"]),
        monitor_flow.to_deployment(MONITOR_FLOW, schedules=cron(schedule.monitor), parameters=where, tags=["flywheel"]),
    ]


class DeploymentsOfAnotherHome(RuntimeError):
    """The server already has the loop's deployments, set up for another FLYWHEEL_HOME."""


def check_deployments_are_this_homes(settings: Settings, deployments: list[RunnerDeployment]) -> None:
    """On a server several homes share (the machine's local one), the deployments are named after their flows:
    registering this home's would silently take over another home's schedules. Raise, naming that home and
    the ways out, when one of them is registered with another home."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    home = str(settings.paths.home)
    others: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for deployment in deployments:
            try:
                found = client.read_deployment_by_name(f"{deployment.flow_name}/{deployment.name}")
            except ObjectNotFound:
                continue
            owner = (found.parameters or {}).get("home")
            if owner and owner != home:
                others[deployment.name] = owner
    if others:
        owners = ", ".join(sorted(set(others.values())))
        raise DeploymentsOfAnotherHome(
            f"this Prefect server already runs {', '.join(sorted(others))} for {owners}; `--replace` moves them to "
            f"{home}, or give this home a server of its own: FLYWHEEL_PREFECT_SERVER_HOME=DIR flywheel schedule")


def register_deployments(deployments: list[RunnerDeployment]) -> list[str]:
    """Create or update the deployments on the API without serving them; returns their ids."""
    return [str(deployment.apply()) for deployment in deployments]


def serve_deployments(deployments: list[RunnerDeployment]) -> None:
    """Run scheduled and triggered flow runs in subprocesses until interrupted (SIGTERM pauses the schedules)."""
    from prefect import serve

    serve(*deployments, print_starting_message=False)
