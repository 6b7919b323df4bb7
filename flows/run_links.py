"""One run id everywhere, and links between the four UIs for it.

The run id (`runs/<run_id>/`) names the Prefect flow run, is the MLflow training run's name and its
`flow_run` tag, the GX results' run name and the Evidently snapshots' `run:` tag. At the end of a run
`link_mlflow_runs` writes, on the MLflow runs this run made (training, drift), where the other UIs show
the same run: the Prefect flow run, the GX Data Docs page of its validation, its drift report and
Evidently snapshot. Addresses of UIs that are started by hand (MLflow's, Evidently's) are the ports
`flywheel ui` prints.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from flows.run_record import RunRecord
from flows.settings import Settings

log = logging.getLogger(__name__)

RUN_ID_TAG = "flywheel.run_id"  # on every MLflow run a flywheel run made
LINK_TAG = "links."  # links.<ui>: where the other UIs show this run
MLFLOW_UI = "http://127.0.0.1:5000"  # `flywheel ui`'s `mlflow ui --port 5000`, when tracking is a local store
EVIDENTLY_UI = "http://127.0.0.1:8000"  # `flywheel ui`'s `evidently ui --port 8000`


def mlflow_ui_url(settings: Settings) -> str:
    """The MLflow UI's address: the tracking server itself when there is one, else `mlflow ui` as `flywheel ui` starts it."""
    uri = settings.tracking_uri
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else MLFLOW_UI


def model_version_url(settings: Settings, model_name: str, version: str) -> str:
    from models.model_card import version_page

    return f"{mlflow_ui_url(settings)}/{version_page(model_name, version)}"


def mlflow_run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    from models.model_card import run_page

    return f"{mlflow_ui_url(settings)}/{run_page(experiment_id, run_id)}"


def file_url(path: str | Path) -> str:
    return "file://" + quote(str(Path(path).absolute()))


def run_links(record: RunRecord) -> dict[str, str]:
    """Where the other UIs show this run, from its summary: links.<ui> → URL."""
    links = {f"{LINK_TAG}{name}": url for name, url in record.links.items() if url}
    validate = record.stages.get("validate") or {}
    page = validate.get("data_docs_page") or validate.get("data_docs")
    if page:
        links[f"{LINK_TAG}data_docs"] = file_url(page)
    if record.monitor.get("report"):
        links[f"{LINK_TAG}drift_report"] = file_url(record.monitor["report"])
    snapshot = evidently_report_url(record.monitor)
    if snapshot:
        links[f"{LINK_TAG}evidently_snapshot"] = snapshot
    return links


def evidently_report_url(monitor: Mapping[str, Any]) -> str | None:
    """The drift snapshot's page in `evidently ui` as `flywheel ui` starts it; its bare id when the project's is
    not recorded (a summary written before it was)."""
    snapshot, project = monitor.get("evidently_snapshot"), monitor.get("evidently_project_id")
    if not snapshot:
        return None
    return f"{EVIDENTLY_UI}/projects/{project}/reports/{snapshot}" if project else str(snapshot)


def mlflow_runs_of(record: RunRecord) -> list[str]:
    """The MLflow runs this flywheel run made: its training and its drift check, not those an earlier run made
    and this one reused from the stage cache (they keep that run's links)."""

    def made_here(stage: str) -> bool:
        return (record.cache.get(stage) or {}).get("computed_by", record.run_id) == record.run_id

    runs = []
    if record.train.get("mlflow_run_id") and made_here("train"):
        runs.append(record.train["mlflow_run_id"])
    if record.monitor.get("mlflow_run") and made_here("monitor"):
        runs.append(record.monitor["mlflow_run"])
    return runs


def link_mlflow_runs(settings: Settings, record: RunRecord) -> None:
    """Tag this run's MLflow runs with the run id and the links; a tracking store out of reach is logged, not
    raised: the links are a convenience, and the run's own outcome stands."""
    runs = mlflow_runs_of(record)
    if not runs:
        return
    tags = {RUN_ID_TAG: record.run_id, **run_links(record)}
    try:
        from mlflow.entities import RunTag

        from flows.stage_config import registry_for

        client = registry_for(settings).client()
        for run_id in runs:
            client.log_batch(run_id, tags=[RunTag(key, value[:5000]) for key, value in tags.items()], synchronous=True)
    except Exception as err:  # noqa: BLE001 - any tracking failure; the run's result is already recorded
        log.warning("could not write the links of run %s on its MLflow runs %s: %s", record.run_id, runs, err)


def prefect_links() -> dict[str, str]:
    """The current Prefect flow run's page, inside a flow run (`{}` outside one)."""
    from prefect.runtime import flow_run

    url = flow_run.ui_url
    return {"prefect_flow_run": url} if url else {}


def summary_links(summary: Mapping[str, Any]) -> dict[str, str]:
    """run_links of a summary read back from summary.json."""
    return run_links(RunRecord(**summary))
