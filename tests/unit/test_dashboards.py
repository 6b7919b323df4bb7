"""The Evidently project per model with its dashboard in code, and drift reports in MLflow and Prefect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evidently.sdk.panels import text_panel
from evidently.ui.workspace import Workspace

from monitoring.dashboard import DRIFTED_COLUMNS, MODALITY_TAB, build_dashboard_panels
from monitoring.drift import DriftResult, compute_drift
from monitoring.workspace import ensure_project, save_drift, sync_dashboard
from tests.unit.params_support import evidently_drift_params

CLASSES = ("circle", "square", "triangle")  # a task's class names: the prediction panels plot them


@pytest.fixture(scope="module")
def drift_result() -> DriftResult:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"img_mean": rng.normal(size=300), "aud_rms_db": rng.normal(size=300)})
    current = pd.DataFrame({"img_mean": rng.normal(2.0, size=200), "aud_rms_db": rng.normal(size=200)})
    return compute_drift(reference, current, ["img_mean", "aud_rms_db"], [], evidently_drift_params())


def panel_titles(workspace: Workspace, project_id) -> list[str]:
    return [panel.title for panel in workspace.get_dashboard(project_id).panels]


def test_the_project_gets_every_panel_once_however_often_it_is_ensured(tmp_path: Path) -> None:
    workspace = Workspace.create(str(tmp_path / "ws"))
    project = ensure_project(workspace, "flywheel-imagebind", CLASSES)
    first = workspace.get_dashboard(project.id)
    again = ensure_project(workspace, "flywheel-imagebind", CLASSES)
    assert again.id == project.id and len(workspace.list_projects()) == 1
    assert workspace.get_dashboard(project.id) == first  # same panels, same ids
    wanted = [item.panel.title for item in build_dashboard_panels(CLASSES)]
    assert sorted(panel_titles(workspace, project.id)) == sorted(wanted)
    assert {"Drift", "Modalities", "Predictions", "Data quality"} == {tab.title for tab in first.tabs}
    assert all(len(tab.panels) == len(set(tab.panels)) for tab in first.tabs)


def test_each_registered_model_gets_its_own_project(tmp_path: Path, drift_result: DriftResult) -> None:
    save_drift(tmp_path / "ws", "model-a", drift_result, CLASSES, batch_id="b1")
    save_drift(tmp_path / "ws", "model-b", drift_result, CLASSES, batch_id="b1")
    save_drift(tmp_path / "ws", "model-a", drift_result, CLASSES, batch_id="b2")
    workspace = Workspace.create(str(tmp_path / "ws"))
    projects = {project.name: project for project in workspace.list_projects()}
    assert set(projects) == {"model-a", "model-b"}
    names = sorted(workspace.get_run(projects["model-a"].id, run).name for run in workspace.list_runs(projects["model-a"].id))
    assert names == ["batch b1", "batch b2"]  # the Reports list names the batch


def test_a_changed_definition_replaces_its_panel_and_hand_made_panels_stay(tmp_path: Path) -> None:
    workspace = Workspace.create(str(tmp_path / "ws"))
    project = ensure_project(workspace, "m", CLASSES)
    dashboard = workspace.get_dashboard(project.id)
    hand_made = text_panel("Notes from the on-call")
    dashboard.panels.append(hand_made)
    dashboard.tabs[0].panels.append(hand_made.id)
    wanted = build_dashboard_panels(CLASSES)
    old = next(p for p in dashboard.panels if p.title == wanted[0].panel.title)
    changed = wanted[0].panel.copy(update={"subtitle": "a new description"})
    synced = sync_dashboard(dashboard, [type(wanted[0])(wanted[0].tab, changed), *wanted[1:]])
    by_title = {p.title: p for p in synced.panels}
    assert by_title[changed.title].id == old.id and by_title[changed.title].subtitle == "a new description"
    assert "Notes from the on-call" in by_title and len(synced.panels) == len(dashboard.panels)
    dropped = sync_dashboard(synced, wanted[1:])  # the code no longer defines the first panel
    assert {p.title for p in dropped.panels} == {p.title for p in synced.panels} - {changed.title}
    assert all(pid in {p.id for p in dropped.panels} for tab in dropped.tabs for pid in tab.panels)


def test_modality_panels_plot_each_modalitys_feature_drift_and_embedding_drift_is_one_entry(monkeypatch) -> None:
    from evidently.sdk.models import PanelMetric

    import monitoring.dashboard as dashboard

    image = next(i.panel for i in build_dashboard_panels(CLASSES) if i.tab == MODALITY_TAB and i.panel.title == "Image drift")
    assert {v.metric_labels["column"] for v in image.values} == set(dashboard.MODALITY_FEATURES["image"])
    embedding = PanelMetric(legend="image embedding", metric="EmbeddingsDrift", metric_labels={"column": "image_emb"})
    monkeypatch.setitem(dashboard.EMBEDDING_DRIFT, "image", embedding)
    image = next(i.panel for i in build_dashboard_panels(CLASSES) if i.panel.title == "Image drift")
    assert image.values[0].metric == "evidently:metric_v2:EmbeddingsDrift"


def test_the_drift_panels_read_what_save_drift_stores(tmp_path: Path, drift_result: DriftResult) -> None:
    """The series filters match the metric points of a saved drift snapshot (else the panels stay empty)."""
    from evidently.ui.service.storage.local.base import InMemoryDataStorage

    save_drift(tmp_path / "ws", "m", drift_result, CLASSES, batch_id="b1")
    points = [item for snapshots in InMemoryDataStorage(str(tmp_path / "ws"))._metrics_points.values()
              for items in snapshots.values() for item in items]
    for item in build_dashboard_panels(CLASSES):
        if item.tab not in ("Drift", MODALITY_TAB):
            continue
        for series in item.panel.values:
            found = [p.value for p in points
                     if p.metric_type == series.metric and series.metric_labels.items() <= p.params.items()]
            column = series.metric_labels.get("column")
            if column is None or column in drift_result.per_column:
                assert found, (item.panel.title, series.legend)
    share = [p.value for p in points if p.metric_type.endswith(DRIFTED_COLUMNS) and p.params["value_type"] == "share"]
    assert share == [pytest.approx(drift_result.drifted_share)]


def test_the_drift_report_becomes_an_mlflow_monitoring_run_linked_from_the_champion(tmp_path: Path, drift_result) -> None:
    from models.registry import Registry
    from monitoring.reports import MONITORING_EXPERIMENT, drift_markdown, log_drift_run

    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", "m", tmp_path / "artifacts")
    client = registry.client()
    client.create_registered_model("m")
    version = client.create_model_version("m", source=(tmp_path / "model").as_uri()).version
    html = tmp_path / "run" / "drift_report.html"
    save_drift(tmp_path / "ws", "m", drift_result, CLASSES, html_path=html, batch_id="b2")
    run_id = log_drift_run(registry, "b2", str(version), drift_result, html, ["b1"])
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == MONITORING_EXPERIMENT
    assert run.info.status == "FINISHED" and run.data.tags["batch"] == "b2" and run.data.tags["champion_version"] == "1"
    assert run.data.metrics["drifted_share"] == pytest.approx(drift_result.drifted_share)
    assert [f.path for f in client.list_artifacts(run_id, "drift")] == ["drift/drift_report.html"]
    assert client.get_model_version("m", version).tags["monitor.latest_run"] == run_id
    text = drift_markdown({"batch": "b2", "champion": "1", "drift_detected": True, "drifted_share": 0.5,
                           "drifted_columns": ["img_mean"], "report": str(html), "mlflow_run": run_id,
                           "evidently_project": "m", "evidently_snapshot": "s", "reference_batches": ["b1"]})
    assert "**DRIFT**" in text and html.as_uri() in text and run_id in text
    assert "snapshot `s`" in text  # no address of evidently ui: the bare id
    linked = drift_markdown({"report": str(html), "evidently_snapshot": "s"}, "http://127.0.0.1:8000/projects/p/reports/s")
    assert "snapshot [`s`](http://127.0.0.1:8000/projects/p/reports/s)" in linked


def test_a_snapshot_links_the_other_uis_of_its_run_in_a_panel_above_the_report(tmp_path: Path, drift_result) -> None:
    import json

    from monitoring.workspace import LINKS_TITLE

    links = [("Prefect flow run", "http://127.0.0.1:4200/flow-runs/flow-run/f1"),
             ("MLflow model version 2", "http://127.0.0.1:5000/#/models/m/versions/2")]
    html = tmp_path / "run" / "drift_report.html"
    for _ in range(2):  # a resumed monitor saves its check again: the panel shows once
        snapshot = save_drift(tmp_path / "ws", "m", drift_result, CLASSES, html_path=html, batch_id="b1",
                              lineage={"run": "r1"}, links=links)
    (stored,) = (tmp_path / "ws").glob(f"*/snapshots/{snapshot}.json")
    widgets = json.loads(stored.read_text())["widgets"]
    assert [w["title"] for w in widgets].count(LINKS_TITLE) == 1 and widgets[0]["title"] == LINKS_TITLE
    text = widgets[0]["params"]["text"]
    assert "`r1`" in text and "[Prefect flow run](http://127.0.0.1:4200/flow-runs/flow-run/f1)" in text
    assert "[MLflow model version 2](http://127.0.0.1:5000/#/models/m/versions/2)" in text
    assert "http://127.0.0.1:4200/flow-runs/flow-run/f1" in html.read_text()  # the HTML report shows them too
