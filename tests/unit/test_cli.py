"""The CLI's contract with users: clear errors and exit code 2 for bad input or configuration."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from flows.cli import app
from tests.unit.task_support import DIGITS
from tests.unit.params_support import clean_params

runner = CliRunner()
PROJECT = Path(__file__).resolve().parents[2]


def example_params(tmp_path: Path, **demo) -> Path:
    """The digits example's params.yaml with demo entries replaced, written where a test may change it."""
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["demo"].update(demo)
    raw["task"]["golden"] = str(tmp_path / "no-golden-yet")  # demo-data never needs the golden batch to exist
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def manifest_rows(batch: Path) -> list[dict]:
    return [json.loads(line) for line in (batch / "manifest.jsonl").read_text().splitlines()]


def test_unknown_drift_kind_names_the_accepted_ones(tmp_path):
    result = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "b"), "--drift", "sunspots"])
    assert result.exit_code == 2
    assert "accent" in result.output and "rotation" in result.output


def test_demo_data_refuses_to_overwrite_a_batch(tmp_path):
    out = tmp_path / "b"
    assert runner.invoke(app, ["demo-data", "--out", str(out), "--samples", "5"]).exit_code == 0
    again = runner.invoke(app, ["demo-data", "--out", str(out), "--samples", "5"])
    assert again.exit_code == 2 and "manifest" in again.output


def test_golden_writes_demo_golden_samples_rows_every_one_labelled_before_any_golden_exists(tmp_path):
    params = example_params(tmp_path, golden_samples=12, golden_seed=5)
    out = tmp_path / "golden"
    result = runner.invoke(app, ["demo-data", "--golden", "--out", str(out), "--params", str(params)])
    assert result.exit_code == 0, result.output
    rows = manifest_rows(out)
    assert len(rows) == 12 and all(row["label"] is not None for row in rows)
    assert not any(json.loads((out / "_faults.json").read_text()).values())  # no corrupt, missing or repeated row
    assert rows[0]["sample_id"] == "d5-00000"  # from demo.golden_seed
    assert "12 rows" in result.output and "12 labelled" in result.output


def test_golden_and_drift_exclude_each_other(tmp_path):
    result = runner.invoke(app, ["demo-data", "--golden", "--drift", "noise", "--out", str(tmp_path / "g"),
                                 "--params", str(example_params(tmp_path))])
    assert result.exit_code == 2 and "--golden and --drift" in result.output
    assert not (tmp_path / "g").exists()


def test_demo_data_without_a_generator_says_the_project_declares_none(tmp_path):
    result = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "b"),
                                 "--params", str(example_params(tmp_path, generator=None))])
    assert result.exit_code == 2
    assert "declares no demo generator" in " ".join(result.output.split())


def test_a_generator_path_that_does_not_import_is_named(tmp_path):
    for path, expected in (("examples.digits.demo:no_such_function", "no function 'no_such_function'"),
                           ("no_such_package.gen:make", "cannot import module 'no_such_package.gen'"),
                           ("examples.digits.demo", "not an import path")):
        result = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "b"),
                                     "--params", str(example_params(tmp_path, generator=path))])
        assert result.exit_code == 2, path
        assert expected in " ".join(result.output.split()), result.output


def test_demo_options_reach_the_generator(tmp_path):
    params = example_params(tmp_path, options={"fault_rate": 0.0, "label_rate": 1.0})
    out = tmp_path / "b"
    result = runner.invoke(app, ["demo-data", "--out", str(out), "--samples", "6", "--seed", "3", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert all(row["label"] is not None for row in manifest_rows(out)) and len(manifest_rows(out)) == 6
    unknown = example_params(tmp_path, options={"sparkle": 1})
    refused = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "c"), "--samples", "2", "--params", str(unknown)])
    assert refused.exit_code == 2 and "sparkle" in refused.output


def test_run_on_a_folder_without_manifest_says_how_to_make_one(tmp_path):
    result = runner.invoke(app, ["run", "--source", str(tmp_path), "--home", str(tmp_path / "home")])
    assert result.exit_code == 2
    assert "flywheel demo-data" in " ".join(result.output.split())  # the console wraps long temp paths


def test_bad_params_stop_at_start_up_naming_the_entry(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("task: {classes: [a, b], prompts: 'a {label}'}\ntrain:\n  lr: -1\n")
    result = runner.invoke(app, ["run", "--source", str(tmp_path), "--params", str(params)])
    assert result.exit_code == 2
    assert "lr" in result.output
    params.write_text("task: {classes: [a, b], prompts: 'a {label}'}\ntrian:\n  lr: 0.1\n")
    assert "trian" in runner.invoke(app, ["ui", "--params", str(params)]).output


def test_quarantine_commands_list_show_and_readmit_a_fixed_row(tmp_path, demo_batch_factory):
    import json

    from features.clean import clean_batch
    from features.ingest import ingest_batch
    from features.io import save_quarantine

    home = tmp_path / "home"
    source = demo_batch_factory(samples=60, seed=8, fault_rate=0.05)
    ingested = ingest_batch(source, home / "lake" / "raw")
    cleaned = clean_batch(ingested.batch_dir, home / "lake" / "clean", clean_params(DIGITS))
    save_quarantine(home / "quarantine", ingested.batch_id, cleaned.report)
    listed = runner.invoke(app, ["quarantine", "list", "--home", str(home), "--reason", "corrupt_image"])
    assert listed.exit_code == 0 and "corrupt_image" in listed.output
    [bad] = json.loads((source / "_faults.json").read_text())["corrupt_image"][:1]
    shown = runner.invoke(app, ["quarantine", "show", bad, "--home", str(home)])
    assert shown.exit_code == 0 and "corrupt_image" in shown.output
    good_png = next((source / "images").glob("*.png"))
    out = tmp_path / "fixed"
    readmitted = runner.invoke(app, ["quarantine", "readmit", ingested.batch_id, bad, "--file", f"image={good_png}",
                                     "--out", str(out), "--home", str(home)])
    assert readmitted.exit_code == 0, readmitted.output
    [row] = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert row["sample_id"] == bad and row["readmitted_from"] == ingested.batch_id
    again = runner.invoke(app, ["quarantine", "readmit", ingested.batch_id, bad, "--home", str(home)])
    assert again.exit_code == 2  # a row is re-admitted once
