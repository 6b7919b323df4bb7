"""`flywheel init DIR`: a project a user fills in and runs, and a folder it refuses to overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from flows.settings import Params, load_params, load_settings

runner = CliRunner()


def fill_in_task(text: str, golden: str | None = None) -> str:
    """What the params file asks the user to do: uncomment the task section (drop each line's "# ")."""
    out, in_task = [], False
    for line in text.splitlines():
        if line.startswith("# task:"):
            in_task = True
        elif in_task and not line.startswith("#   "):
            in_task = False
        line = line[2:] if in_task else line
        if golden is not None and line.startswith("  golden:"):
            line = f"  golden: {golden}"
        out.append(line)
    return "\n".join(out) + "\n"


def write_golden(batch: Path, labels: list[str]) -> None:
    """A tiny landing batch, every row labelled: one 16x16 image and one caption per row."""
    (batch / "images").mkdir(parents=True)
    rows = []
    for i, label in enumerate(labels):
        Image.new("L", (16, 16), color=40 * i).save(batch / "images" / f"{i}.png")
        rows.append({"sample_id": f"g{i}", "captured_at": "2026-01-01T00:00:00Z", "image": f"images/{i}.png",
                     "caption": f"a photo of a {label}", "label": label, "camera": "left"})
    (batch / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_init_writes_params_an_empty_landing_folder_and_a_readme_saying_how_to_run(tmp_path):
    project = tmp_path / "shapes"
    result = runner.invoke(app, ["init", str(project)])
    assert result.exit_code == 0, result.output
    assert (project / "params.yaml").is_file()
    assert (project / "data" / "landing").is_dir() and not any((project / "data" / "landing").iterdir())
    readme = (project / "README.md").read_text()
    assert "manifest.jsonl" in readme and "golden" in readme
    assert f"flywheel run --params {project / 'params.yaml'} --home {project / '.flywheel'} --source" in readme


def test_the_scaffold_asks_for_a_task_until_it_is_filled_in(tmp_path):
    project = tmp_path / "p"
    assert runner.invoke(app, ["init", str(project)]).exit_code == 0
    with pytest.raises(ValueError, match="no task: section"):
        load_params(project / "params.yaml")
    refused = runner.invoke(app, ["run", "--params", str(project / "params.yaml"), "--home", str(project / ".flywheel"),
                                  "--source", str(project / "data" / "landing")])
    assert refused.exit_code == 2 and "flywheel init" in " ".join(refused.output.split())


def test_a_filled_in_scaffold_loads_with_the_defaults_and_its_golden_batch_relative_to_the_project(tmp_path):
    project = tmp_path / "p"
    assert runner.invoke(app, ["init", str(project)]).exit_code == 0
    params_path = project / "params.yaml"
    params_path.write_text(fill_in_task(params_path.read_text()))
    params = load_params(params_path)
    assert params.task.classes == ("cat", "dog") and params.task.prompts == "a photo of a {label}"
    defaults = Params.model_validate({"task": params.task.model_dump()})
    for section in ("clean", "validate_", "transform", "label", "train", "monitor", "serve", "demo"):
        assert getattr(params, section) == getattr(defaults, section), section
    assert params.gate.families["imagebind"].thresholds, "the gate refuses to judge without a threshold"

    write_golden(project / "data" / "golden", ["cat", "dog", "cat"])
    settings = load_settings(project / ".flywheel", params_path)
    assert settings.task.golden == (project / "data" / "golden").resolve()
    assert settings.task.prompts == (("a photo of a cat",), ("a photo of a dog",))


def test_a_filled_in_scaffold_whose_golden_names_another_class_stops_at_start_up(tmp_path):
    project = tmp_path / "p"
    assert runner.invoke(app, ["init", str(project)]).exit_code == 0
    params_path = project / "params.yaml"
    params_path.write_text(fill_in_task(params_path.read_text()))
    write_golden(project / "data" / "golden", ["cat", "horse"])
    with pytest.raises(ValueError, match="horse"):
        load_settings(project / ".flywheel", params_path)


def test_init_refuses_a_folder_that_holds_something_unless_forced(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "params.yaml").write_text("mine\n")
    refused = runner.invoke(app, ["init", str(project)])
    assert refused.exit_code == 2
    assert "not empty" in refused.output and "--force" in refused.output
    assert (project / "params.yaml").read_text() == "mine\n"
    forced = runner.invoke(app, ["init", str(project), "--force"])
    assert forced.exit_code == 0, forced.output
    assert "task:" in (project / "params.yaml").read_text()
