"""Where a drift report goes besides the Evidently workspace: an MLflow monitoring run, a Prefect markdown.

Each monitored batch gets its own run in the `flywheel-monitoring` experiment rather than
artifacts on the champion's training run: that run stays the immutable record of how the model
was trained, monitoring runs can be searched and compared by batch and champion version, and
the training experiment lists training runs only. The champion's model version points at its
latest monitoring run (tag `monitor.latest_run`), so the registry page leads to the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.class_mix import describe_class_moves

if TYPE_CHECKING:  # MLflow and Evidently take seconds to import: a run's markdown needs neither
    from models.registry import Registry
    from monitoring.drift import DriftResult

MONITORING_EXPERIMENT = "flywheel-monitoring"
REPORT_FOLDER = "drift"  # artifact folder of the HTML report in the monitoring run


def log_drift_run(registry: Registry, batch_id: str, champion: str, result: DriftResult, html_path: Path,
                  reference_batches: list[str], extra_tags: dict[str, str] | None = None) -> str:
    """A finished MLflow run holding the drift verdict, per-column scores and the HTML report; returns its id.
    `extra_tags`: more run tags (`batch_rejected` for a batch a data stage refused)."""
    from mlflow.entities import Metric

    client = registry.client()
    experiment_id = registry.experiment_id(MONITORING_EXPERIMENT)
    tags = {"batch": batch_id, "model": registry.model_name, "champion_version": champion,
            "reference_batches": ",".join(reference_batches)[:5000], "drift_detected": str(result.drift_detected).lower(), **(extra_tags or {})}
    run_id = client.create_run(experiment_id, run_name=f"drift {batch_id}", tags=tags).info.run_id
    now = int(time.time() * 1000)
    scores = {f"drift_score.{column}": value["score"] for column, value in result.per_column.items()}
    values = {"drifted_share": result.drifted_share, "drifted_columns": len(result.drifted_columns),
              "reference_rows": result.reference_rows, "current_rows": result.current_rows, **scores}
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in values.items()])
    client.log_artifact(run_id, str(html_path), artifact_path=REPORT_FOLDER)
    client.set_terminated(run_id)
    client.set_model_version_tag(registry.model_name, champion, "monitor.latest_run", run_id)
    return run_id


def drift_markdown(monitor: dict[str, Any], snapshot_url: str | None = None) -> str:
    """The monitor stage's summary as a Prefect markdown artifact: verdict, evidence (a drifted class mix names
    the classes that moved), where the reports are; `snapshot_url`, the snapshot's page in `evidently ui`, links it."""
    verdict = "DRIFT" if monitor.get("drift_detected") else "no drift"
    drifted = ", ".join(f"`{c}`" for c in monitor.get("drifted_columns", [])) or "none"
    report = Path(monitor["report"])
    rejected = monitor.get("batch_rejected")
    rejection = ([f"**REJECTED by {rejected.get('stage')}**: {rejected.get('expectation')} observed {rejected.get('observed')}, "
                  f"bound {rejected.get('bound')}; the batch never enters the training window", ""] if rejected else [])
    moves = [f"- `{finding}`: {moved}" for finding, moved in describe_class_moves(monitor.get("checks") or {}).items()]
    snapshot = f"`{monitor.get('evidently_snapshot')}`"
    snapshot = f"[{snapshot}]({snapshot_url})" if snapshot_url else snapshot
    class_mix = f", class mix `{monitor['evidently_predictions_snapshot']}`" if monitor.get("evidently_predictions_snapshot") else ""
    return "\n".join([
        f"# Drift{' of batch ' + str(monitor['batch']) if monitor.get('batch') else ''} against champion v{monitor.get('champion')}",
        *rejection,
        f"**{verdict}**: drifted share {monitor.get('drifted_share', 0):.2f}; drifted features: {drifted}", "",
        *([*moves, ""] if moves else []),
        "| where | what |", "|---|---|",
        f"| HTML report | [{report.name}]({report.absolute().as_uri()}) |",
        f"| MLflow | run `{monitor.get('mlflow_run')}` in experiment `{MONITORING_EXPERIMENT}` |",
        f"| Evidently | project `{monitor.get('evidently_project')}`, snapshot {snapshot}{class_mix} |",
        f"| reference | batches {', '.join(monitor.get('reference_batches', []))} |",
    ])
