"""The monitor speaks the task's class names: a 3-class task with string names sees them, and no bare class
index, in the run summary's class mix, the Evidently prediction snapshot, the dashboard's prediction panels,
the alert, the Prefect markdown and the `flywheel monitor` table. The statistics are those of the indices."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from evidently.ui.service.storage.local.base import InMemoryDataStorage
from evidently.ui.workspace import Workspace

from monitoring.alerts import build_drift_alert
from monitoring.checks import MonitorData, MonitorResult, run_checks
from monitoring.class_mix import compute_class_mix, name_classes
from monitoring.dashboard import MAX_CLASS_SERIES, PREDICTED_MODALITIES, PREDICTION_TAB, build_dashboard_panels
from monitoring.model_drift import PREDICTIONS_TAG, compute_prediction_drift
from monitoring.reports import drift_markdown
from monitoring.workspace import save_predictions
from tests.unit.params_support import check_params, model_drift_params

CLASSES = ("circle", "square", "triangle")


def windows(seed: int = 0) -> tuple[MonitorData, MonitorData]:
    """Image predictions keep their mix; audio's swing to circle (and audio has fewer rows than image)."""
    rng = np.random.default_rng(seed)
    reference = MonitorData(predictions={"image": rng.integers(0, 3, 300), "audio": rng.integers(0, 3, 240)})
    current = MonitorData(predictions={"image": rng.integers(0, 3, 200),
                                       "audio": rng.choice(3, 150, p=[0.8, 0.1, 0.1])})
    return reference, current


@pytest.fixture(scope="module")
def checked() -> tuple[MonitorData, MonitorData, MonitorResult]:
    reference, current = windows()
    return reference, current, run_checks(reference, current, [], [], check_params(), classes=CLASSES)


def summary_of(result: MonitorResult, **extra) -> dict:
    return {"status": "drift" if result.drift_detected else "no_drift", "champion": "2", **extra, **result.to_summary()}


def test_the_class_mix_is_named_by_class_and_its_shares_are_the_indices_shares(checked):
    reference, current, result = checked
    check = result.checks["prediction_drift"]
    assert result.findings == ["prediction_drift:audio"]
    mix = check["items"]["audio"]["class_mix"]
    assert list(mix) == list(CLASSES)  # the task's order, names only
    for k, name in enumerate(CLASSES):
        assert mix[name]["current"] == pytest.approx(np.mean(current.predictions["audio"] == k), abs=1e-6)
        assert mix[name]["reference"] == pytest.approx(np.mean(reference.predictions["audio"] == k), abs=1e-6)
    assert mix["circle"]["current"] > 0.7
    # The verdict is the index-based statistic's: naming the classes relabels, it does not re-judge.
    scores = compute_prediction_drift(reference.predictions["audio"], current.predictions["audio"], model_drift_params())
    assert check["items"]["audio"]["score"] == round(scores.score, 6)
    json.dumps(result.to_summary())  # the run summary stays JSON


def test_without_class_names_the_check_still_judges_but_names_nothing():
    reference, current = windows()
    result = run_checks(reference, current, [], [], check_params())
    assert result.findings == ["prediction_drift:audio"] and result.prediction_report is None
    assert all("class_mix" not in entry for entry in result.checks["prediction_drift"]["items"].values())


def test_a_prediction_outside_the_tasks_classes_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"predicted classes \[3\] are not indices of the task's 3 classes"):
        compute_class_mix(np.array([0, 1]), np.array([2, 3]), CLASSES)
    assert list(name_classes(np.array([2, 0]), CLASSES)) == ["triangle", "circle"]


def test_the_prediction_snapshot_shows_class_names_and_no_bare_index(checked):
    reference, current, result = checked
    assert PREDICTIONS_TAG in result.prediction_report._tags  # Evidently 0.7.23 keeps tags off the JSON
    snapshot = json.loads(result.prediction_report.json())
    categories = {m["config"]["column"]: set() for m in snapshot["metrics"]}
    for metric in snapshot["metrics"]:
        if metric["config"]["type"].endswith("CategoryCount"):
            categories[metric["config"]["column"]] |= set(metric["config"]["categories"])
    assert categories == {"image": set(CLASSES), "audio": set(CLASSES)}
    drift = {m["config"]["column"]: m["value"] for m in snapshot["metrics"] if m["config"]["type"].endswith("ValueDrift")}
    items = result.checks["prediction_drift"]["items"]
    assert drift == {m: pytest.approx(items[m]["score"], abs=1e-6) for m in ("image", "audio")}  # same distance
    # A share counts the modality's own rows: audio has fewer rows than image, its shares still sum to 1.
    shares = [m["value"]["share"] for m in snapshot["metrics"]
              if m["config"]["type"].endswith("CategoryCount") and m["config"]["column"] == "audio"]
    assert sum(shares) == pytest.approx(1.0)
    assert shares[0] == pytest.approx(items["audio"]["class_mix"]["circle"]["current"], abs=1e-6)
    text = json.dumps(snapshot["metrics"])
    assert not re.search(r"categories=[0-9]", text) and "circle" in text


def test_the_prediction_panels_plot_each_class_by_name_from_what_save_predictions_stores(tmp_path: Path, checked):
    _, _, result = checked
    run_id = save_predictions(tmp_path / "ws", "m", result.prediction_report, CLASSES, batch_id="b7",
                              html_path=tmp_path / "predictions.html")
    workspace = Workspace.create(str(tmp_path / "ws"))
    (project,) = workspace.list_projects()
    assert workspace.get_run(project.id, run_id).name == "batch b7 predictions"
    assert (tmp_path / "predictions.html").stat().st_size > 10_000
    points = [item for snapshots in InMemoryDataStorage(str(tmp_path / "ws"))._metrics_points.values()
              for items in snapshots.values() for item in items]
    panels = {item.panel.title: item.panel for item in build_dashboard_panels(CLASSES) if item.tab == PREDICTION_TAB}
    assert set(panels) == {f"{m.capitalize()} prediction mix" for m in PREDICTED_MODALITIES}
    for modality in ("image", "audio"):
        panel = panels[f"{modality.capitalize()} prediction mix"]
        assert [series.legend for series in panel.values] == list(CLASSES)  # names, in the task's order
        plotted = {}
        for series in panel.values:
            (value,) = [p.value for p in points
                        if p.metric_type == series.metric and series.metric_labels.items() <= p.params.items()]
            plotted[series.legend] = value
        mix = result.checks["prediction_drift"]["items"][modality]["class_mix"]
        assert plotted == {name: pytest.approx(mix[name]["current"], abs=1e-6) for name in CLASSES}
    # A dashboard of the same project on a 10-class task named by numbers still labels by name, not index.
    numbered = build_dashboard_panels(tuple(f"n{k}" for k in range(12)))
    legends = {s.legend for item in numbered if item.tab == PREDICTION_TAB for s in item.panel.values}
    assert legends == {f"n{k}" for k in range(12)}
    many = build_dashboard_panels(tuple(f"c{k}" for k in range(MAX_CLASS_SERIES + 1)))
    assert all(len(item.panel.values) == 1 for item in many if item.tab == PREDICTION_TAB)


def test_the_predicted_modalities_are_the_ones_the_monitor_observes():
    from monitoring.observations import MODALITY_KEYS

    assert set(PREDICTED_MODALITIES) == {*MODALITY_KEYS, "text"}  # "text": a lora champion's caption classes


def test_a_rejected_batchs_prediction_snapshot_is_marked(tmp_path: Path):
    reference, current = windows(seed=3)
    result = run_checks(reference, current, [], [], check_params(), classes=CLASSES)
    run_id = save_predictions(tmp_path / "ws", "m", result.prediction_report, CLASSES, batch_id="b8",
                              rejected_by="validate: audio_seconds")
    workspace = Workspace.create(str(tmp_path / "ws"))
    (project,) = workspace.list_projects()
    run = workspace.get_run(project.id, run_id)
    assert run.name == "batch b8 predictions (REJECTED by validate: audio_seconds)"
    unbatched = save_predictions(tmp_path / "ws", "m", result.prediction_report, CLASSES)
    assert workspace.get_run(project.id, unbatched).name == "inference log predictions"


def test_the_alert_and_the_markdown_name_the_classes_that_moved(checked, tmp_path: Path):
    _, _, result = checked
    summary = summary_of(result, report=str(tmp_path / "drift.html"), batch="b9", evidently_predictions_snapshot="s2")
    alert = build_drift_alert("m", summary, "b9")
    body = alert.body()
    line = next(line for line in body.splitlines() if line.startswith("- prediction_drift:audio"))
    assert line.startswith("- prediction_drift:audio: circle ") and "→" in line
    assert not re.search(r"\b[0-2] \d+% →", body)  # no class by its index
    quieter = summary_of(run_checks(*windows(), [], [], check_params()))  # no names: the same drift
    assert build_drift_alert("m", quieter, "b9").fingerprint == alert.fingerprint
    text = drift_markdown(summary)
    assert "- `prediction_drift:audio`: circle " in text and "class mix `s2`" in text


def test_the_monitor_table_names_the_classes_that_moved(checked):
    from flows.cli_common import console
    from flows.cli_monitor import print_monitor

    _, _, result = checked
    with console.capture() as captured:
        print_monitor(summary_of(result))
    output = re.sub(r"\s+", " ", captured.get())
    assert re.search(r"audio=[0-9.]+/0\.15 \(circle \d+% → \d+%", output), output


def test_the_monitor_stage_saves_the_class_mix_beside_its_summary(tmp_path: Path, checked):
    """The run summary's monitor section and monitor.json hold the mix by name; the snapshot is in the project."""
    from types import SimpleNamespace

    from flows.monitor_stage import _summarise

    _, _, result = checked
    settings = SimpleNamespace(paths=SimpleNamespace(evidently=tmp_path / "ws", runs=tmp_path / "runs"),
                               task=SimpleNamespace(classes=CLASSES), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                               params=SimpleNamespace(registry=SimpleNamespace(model_name="m")))
    summary = _summarise(settings, result, tmp_path / "run", "2", {"inference_records": 350})
    saved = json.loads((tmp_path / "run" / "monitor.json").read_text())
    assert list(saved["checks"]["prediction_drift"]["items"]["audio"]["class_mix"]) == list(CLASSES)
    assert Path(summary["predictions_report"]).is_file() and "evidently_snapshot" not in summary  # no features
    workspace = Workspace.create(str(tmp_path / "ws"))
    (project,) = workspace.list_projects()
    run = workspace.get_run(project.id, summary["evidently_predictions_snapshot"])
    assert run.name == "inference log predictions"
    # No flow run and no validation behind an inference-log check: its panel links the model version it used.
    (stored,) = (tmp_path / "ws").glob(f"*/snapshots/{summary['evidently_predictions_snapshot']}.json")
    panel = json.loads(stored.read_text())["widgets"][0]
    assert panel["title"] == "This run in the other UIs"
    assert "[MLflow model version 2](http://127.0.0.1:5000/#/models/m/versions/2)" in panel["params"]["text"]
