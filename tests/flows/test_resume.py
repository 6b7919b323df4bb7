"""Crash, resume and re-run of the whole lifecycle, as a user runs it: `flywheel run --plain` in a
subprocess with fast params, killed with SIGKILL by the test hook FLYWHEEL_FAULT_AT (flows/stage_cache.py).

One home is killed again and again along the lifecycle, each attempt (alternately `--resume RUN_ID`
and a plain re-run of the same batch) continuing where the previous one died and dying at the next
point, until one attempt completes; then the lake, the feature store, the quarantine and the
registry must hold what one uninterrupted run left in another home. Each kill costs a process
start (the libraries' imports), so the points are the representative ones:
  * `transform:after`: a data stage's side effects done (feature-table upserts, model-input shards,
    quarantine file), its record not written: the next attempt repeats it, and writes must replace;
  * `train-epoch-6` (of 4 + 4 epochs): training resumes from its last epoch checkpoint, and the
    MLflow run the killed attempt left RUNNING is closed (KILLED);
  * `register:after`: a version registered but not recorded: the next attempt must find it, not
    register a second one;
  * `gate:after`: the version gated and promoted but not recorded: the next attempt must take the
    recorded decision instead of gating the champion against itself.
The other boundaries are covered by these: `<stage>:before` leaves the state of the previous stage's
completed record, which every attempt after the first re-loads; `ingest` skips a batch it holds
whatever happened; `clean`, `validate` and `label` `:after` repeat a staged-and-renamed write, a
quarantine file and table upserts as `transform:after` does; `version` re-hashes unchanged folders
on every run anyway; `train:after` repeats training from its final checkpoint into a new MLflow run
and then meets `register`'s check; `monitor` and `react` repeat a drift report and an alert check
(alerts are de-duplicated by their cooldown state). The runs that are not killed (the uninterrupted
one, the re-run, the changed parameter) run in-process through the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from collections import Counter

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import PROJECT, write_fast_lifecycle_params

pytestmark = pytest.mark.slow

FLYWHEEL = str(Path(sys.executable).with_name("flywheel"))
METRICS = ("zero_shot_image_acc", "zero_shot_audio_acc", "audio_to_image_r1")
MODEL = "flywheel-imagebind"


def flywheel_run(home: Path, params: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FLYWHEEL_FAULT_AT"}
    if fault:
        env["FLYWHEEL_FAULT_AT"] = fault
    env["COLUMNS"] = "200"
    return subprocess.run([FLYWHEEL, "run", "--plain", "--home", str(home), "--params", str(params), *args],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)


def run_in_process(home: Path, params: Path, *args: str):
    """`flywheel run --plain` through the CLI in this process (the libraries are imported once)."""
    from flows.cli import app

    return CliRunner().invoke(app, ["run", "--plain", "--home", str(home), "--params", str(params), *args],
                              env={"COLUMNS": "200"})


def summaries(home: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (home / "runs").glob("*/summary.json")}


def newest_summary(home: Path) -> dict:
    """The summary written last: an attempt rewrites its run's summary after every stage."""
    return json.loads(max((home / "runs").glob("*/summary.json"), key=lambda p: p.stat().st_mtime_ns).read_text())


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def lifecycle_state(home: Path) -> dict:
    """What a user finds after the run: rows per store, model versions, aliases, the champion's metrics."""
    from mlflow import MlflowClient

    from models.inputs import load_model_inputs

    batches = sorted(p.name for p in (home / "lake" / "raw").iterdir() if p.is_dir() and not p.name.startswith("."))
    tables = {p.stem: pd.read_parquet(p) for p in sorted((home / "feast" / "data").glob("*.parquet"))}
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    versions = client.search_model_versions(f"name='{MODEL}'")
    experiment = client.get_experiment_by_name("flywheel-lifecycle").experiment_id
    champion = client.get_model_version_by_alias(MODEL, "champion")
    return {
        "batches": batches,
        "raw_rows": {b: _lines(home / "lake" / "raw" / b / "rows.jsonl") for b in batches},
        "clean_rows": {b: len(pd.read_parquet(home / "lake" / "clean" / b / "rows.parquet")) for b in batches},
        "input_rows": {b: len(load_model_inputs(home / "lake" / "inputs" / b)) for b in batches},
        "feature_rows": {name: len(t) for name, t in tables.items()},
        "feature_duplicates": {name: int(t.duplicated(["sample_id", "batch_id"]).sum()) for name, t in tables.items()},
        "quarantine": {f"{p.parent.name}/{p.name}": _lines(p) for p in sorted((home / "quarantine").glob("*/*.jsonl"))},
        "model_versions": sorted(int(v.version) for v in versions),
        "open_runs": len(client.search_runs([experiment], "attributes.status = 'RUNNING'")),  # none left RUNNING
        "champion": str(champion.version),
        "metrics": {k: client.get_run(champion.run_id).data.metrics[k] for k in METRICS},
    }


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    return write_fast_lifecycle_params(tmp_path_factory.mktemp("params") / "params.yaml")


@pytest.fixture(scope="module")
def landing(demo_batch_factory) -> Path:
    return demo_batch_factory(samples=80, seed=11)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, params, landing):
    """One run that nobody killed: the state every crashed-and-resumed run must end in."""
    home = tmp_path_factory.mktemp("uninterrupted")
    started = time.perf_counter()
    done = run_in_process(home, params, "--source", str(landing))
    seconds = time.perf_counter() - started
    assert done.exit_code == 0, done.output
    return home, lifecycle_state(home), seconds


def test_a_run_killed_at_every_stage_boundary_and_in_training_resumes_to_the_uninterrupted_state(
        tmp_path_factory, params, landing, uninterrupted):
    import torch

    reference_home, reference, _ = uninterrupted
    home = tmp_path_factory.mktemp("killed")
    points = ["transform:after", "train-epoch-6", "register:after", "gate:after"]
    order = ["ingest", "clean", "validate", "transform", "label", "version", "train", "register", "gate", "monitor"]
    previous = None
    for attempt, point in enumerate(points):
        how = ("--resume", previous["run_id"]) if attempt % 2 and previous else ("--source", str(landing))
        killed = flywheel_run(home, params, *how, fault=point)
        assert killed.returncode == -signal.SIGKILL, f"{point}: {killed.stdout}{killed.stderr}"
        summary = newest_summary(home)
        assert summary["status"] == "running" and summary["finished_at"] is None, point  # the kill left no verdict
        stage = point.split(":")[0] if ":" in point else "train"
        # Everything recorded before this point was re-loaded, not recomputed, by this attempt.
        done_before = order[:order.index(stage)]
        if previous is not None:
            reused = [s for s in done_before if summary["cache"].get(s, {}).get("cached")]
            recorded_earlier = [s for s in done_before if s in previous["cache"] and s != previous_stage]
            assert set(recorded_earlier) <= set(reused), (point, summary["cache"])
        if how[0] == "--resume":
            assert summary["run_id"] == previous["run_id"] and summary["attempts"] >= 2
        if point == "train-epoch-6":
            (checkpoint,) = (home / "state" / "checkpoints").glob("*/last.pt")
            state = torch.load(checkpoint, weights_only=True)
            assert (state["stage"], state["epoch"]) == ("audio_image", 1)  # epoch 6 of 4 + 4
        previous, previous_stage = summary, stage
    finished = flywheel_run(home, params, "--resume", previous["run_id"])
    assert finished.returncode == 0, finished.stdout + finished.stderr
    summary = newest_summary(home)
    assert summary["status"] == "succeeded" and summary["run_id"] == previous["run_id"]
    assert not any((home / "state" / "checkpoints").glob("*/last.pt"))  # removed once the model was registered
    state = lifecycle_state(home)
    metrics, expected = state.pop("metrics"), dict(reference)
    expected_metrics = expected.pop("metrics")
    assert state == expected
    assert metrics == pytest.approx(expected_metrics, abs=0.02)
    # One record per stage, as in the uninterrupted home: no stage was recorded twice under other inputs.
    assert Counter(p.name.rsplit("-", 1)[0] for p in (home / "state" / "stages").iterdir()) == Counter(
        p.name.rsplit("-", 1)[0] for p in (reference_home / "state" / "stages").iterdir())


def test_a_rerun_of_a_completed_run_recomputes_nothing(params, landing, uninterrupted):
    home, reference, first_seconds = uninterrupted
    records = {p.name: p.stat().st_mtime_ns for p in (home / "state" / "stages").iterdir()}
    again = run_in_process(home, params, "--source", str(landing))
    assert again.exit_code == 0, again.output
    summary = newest_summary(home)
    assert summary["status"] == "succeeded"
    assert {stage: entry["cached"] for stage, entry in summary["cache"].items()} == dict.fromkeys(
        ["ingest", "clean", "validate", "transform", "label", "version", "train", "register", "gate", "monitor", "react"],
        True)
    assert {p.name: p.stat().st_mtime_ns for p in (home / "state" / "stages").iterdir()} == records  # none rewritten
    assert summary["model"]["version"] == "1" and summary["train"] == summaries(home)[
        summary["cache"]["train"]["computed_by"]]["train"]
    assert "(cached)" in again.output
    assert lifecycle_state(home) == reference  # no second model version, no duplicated rows
    assert sum(summary["seconds"].values()) < 0.2 * sum(summaries(home)[summary["cache"]["train"]["computed_by"]]["seconds"].values())


def test_a_changed_parameter_recomputes_only_the_stages_downstream_of_it(tmp_path, params, landing, uninterrupted):
    home, reference, _ = uninterrupted
    changed = yaml.safe_load(params.read_text())
    changed["monitor"]["feature_threshold"] = 0.2
    changed_params = tmp_path / "params.yaml"
    changed_params.write_text(yaml.safe_dump(changed))
    again = run_in_process(home, changed_params, "--source", str(landing))
    assert again.exit_code == 0, again.output
    cached = {stage: entry["cached"] for stage, entry in newest_summary(home)["cache"].items()}
    assert [stage for stage, hit in cached.items() if not hit] == ["monitor", "react"]
    assert lifecycle_state(home) == reference


def test_resume_names_an_unknown_or_succeeded_run(params, uninterrupted):
    home, _, _ = uninterrupted
    unknown = run_in_process(home, params, "--resume", "no-such-run")
    assert unknown.exit_code == 2 and "no run 'no-such-run'" in unknown.output
    succeeded = next(s["run_id"] for s in summaries(home).values() if s["status"] == "succeeded")
    done = run_in_process(home, params, "--resume", succeeded)
    output = " ".join(done.output.split())
    assert done.exit_code == 2 and "succeeded already" in output and "nothing to resume" in output
