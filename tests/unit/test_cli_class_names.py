"""`flywheel models` and the gate table show a class slice by the task's class name (`class=triangle`),
as the gate judged and recorded it, through the registry's tag keys and back; other slices likewise."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.cli_models import failed_slices, gate_table, slices_cell
from tests.conftest import example_params
from tests.flows.shapes_task import TASK, write_shapes_batch

runner = CliRunner()


def check(metric: str, kind: str, passed: bool, slice_: str | None = None) -> dict:
    return {"metric": metric, "kind": kind, "observed": 0.5 if passed else 0.1, "bound": 0.3, "passed": passed,
            "interval": None if passed else (-0.4, -0.1), "slice": slice_, "champion": None, "detail": ""}


DECISION = {
    "passed": False, "reason": "zero_shot_image_acc[class=triangle] min failed",
    "checks": [check("zero_shot_image_acc", "min", True),
               check("zero_shot_image_acc", "min", True, "class=circle"),
               check("zero_shot_image_acc", "min", False, "class=triangle"),
               check("zero_shot_image_acc", "change", False, "class=triangle"),
               check("zero_shot_image_acc", "min", False, "camera=cam-b")],
    "challenger": {"zero_shot_image_acc": 0.61}, "champion": None,
    "lineage": {"challenger_version": "1", "champion_version": None, "golden_version": "golden@abc"},
    "skipped_slices": [],
}


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_gate_table_names_the_class_slices():
    from flows.cli_common import console

    with console.capture() as captured:
        console.print(gate_table(DECISION))
    output = flat(captured.get())  # rich would swallow an unescaped [class=circle] as a style tag
    assert "zero_shot_image_acc[class=triangle] min" in output and "zero_shot_image_acc[class=circle] min" in output
    assert "[camera=cam-b]" in output


def test_flywheel_models_lists_the_failed_slices_by_class_name(tmp_path: Path, monkeypatch):
    from flows.cli_common import console
    from flows.settings import load_settings
    from flows.stage_config import registry_for
    from models.registry import record_decision

    params = example_params()
    params["task"] = {**TASK, "golden": str(write_shapes_batch(tmp_path / "golden", samples=6, seed=5, label_rate=1.0))}
    params["label"]["functions"] = []
    params["gate"]["families"]["imagebind"]["slices"] = {"class": {"zero_shot_image_acc": {"min": 0.0}}, "camera": {"zero_shot_image_acc": {"min": 0.0}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    options = ["--home", str(tmp_path / "home"), "--params", str(tmp_path / "params.yaml")]
    settings = load_settings(tmp_path / "home", tmp_path / "params.yaml")
    registry = registry_for(settings)
    client = registry.client()
    run = client.create_run(client.create_experiment("training")).info.run_id
    client.create_registered_model(registry.model_name)
    version = client.create_model_version(registry.model_name, source=(tmp_path / "model").as_uri(), run_id=run).version
    record_decision(registry, str(version), DECISION)
    tags = client.get_model_version(registry.model_name, version).tags

    assert failed_slices(tags, ("camera",)) == ["class=triangle", "camera=cam-b"]  # each slice once
    assert slices_cell(tags, ("camera",)) == "1/4 passed; failed: class=triangle, camera=cam-b"
    monkeypatch.setattr(console, "width", 250)  # no folding inside the slices cell
    listed = runner.invoke(app, ["models", *options])
    assert listed.exit_code == 0, listed.output
    assert "class=triangle" in flat(listed.output) and "class_triangle" not in listed.output


def test_the_monitor_table_lists_the_modalities_that_do_not_apply():
    """`not_applicable` holds reasons, not judged entries: the table lists them instead of failing on them."""
    from flows.cli_common import console
    from flows.cli_monitor import print_monitor

    summary = {"status": "no_drift", "champion": "1", "checks": {
        "prediction_drift": {"status": "no_drift", "items": {"image": {"score": 0.01, "threshold": 0.15, "drifted": False}}},
        "not_applicable": {"status": "skipped", "items": {"audio": "the champion has no audio tower",
                                                          "depth": "the champion has no depth tower"}}}}
    with console.capture() as captured:
        print_monitor(summary)
    assert re.search(r"not_applicable\s*│\s*skipped\s*│\s*│\s*audio, depth", captured.get()), captured.get()
