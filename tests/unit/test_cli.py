"""The CLI's contract with users: clear errors and exit code 2 for bad input or configuration."""

from __future__ import annotations

from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def test_unknown_drift_kind_names_the_accepted_ones(tmp_path):
    result = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "b"), "--drift", "sunspots"])
    assert result.exit_code == 2
    assert "accent" in result.output and "rotation" in result.output


def test_demo_data_refuses_to_overwrite_a_batch(tmp_path):
    out = tmp_path / "b"
    assert runner.invoke(app, ["demo-data", "--out", str(out), "--samples", "5"]).exit_code == 0
    again = runner.invoke(app, ["demo-data", "--out", str(out), "--samples", "5"])
    assert again.exit_code == 2 and "manifest" in again.output


def test_run_on_a_folder_without_manifest_says_how_to_make_one(tmp_path):
    result = runner.invoke(app, ["run", "--source", str(tmp_path), "--home", str(tmp_path / "home")])
    assert result.exit_code == 2
    assert "flywheel demo-data" in " ".join(result.output.split())  # the console wraps long temp paths


def test_bad_params_stop_at_start_up_naming_the_entry(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  lr: -1\n")
    result = runner.invoke(app, ["run", "--source", str(tmp_path), "--params", str(params)])
    assert result.exit_code == 2
    assert "lr" in result.output
    params.write_text("trian:\n  lr: 0.1\n")
    assert "trian" in runner.invoke(app, ["ui", "--params", str(params)]).output


def test_quarantine_commands_list_show_and_readmit_a_fixed_row(tmp_path, demo_batch_factory):
    import json

    from features.clean import CleanParams, clean_batch
    from features.ingest import ingest_batch
    from features.io import save_quarantine

    home = tmp_path / "home"
    source = demo_batch_factory(samples=60, seed=8, fault_rate=0.05)
    ingested = ingest_batch(source, home / "lake" / "raw")
    cleaned = clean_batch(ingested.batch_dir, home / "lake" / "clean", CleanParams())
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
