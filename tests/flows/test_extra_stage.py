"""A project's own stage, added by import path in params.yaml (`stages.extra`), under both drivers.

The stage runs where it says, its dropped rows are quarantined with its reasons and leave the batch's
model inputs, the summary shows it, a re-run reuses its record, and a bad entry stops start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from features.io import load_jsonl
from flows.settings import load_settings
from models.inputs import load_model_inputs
from tests.conftest import PROJECT, example_params

pytestmark = pytest.mark.slow

DEDUPE = {"after": "transform", "fn": "tests.flows.project_stages.stages:keep_one_per", "name": "dedupe_by_metadata",
          "params": {"fields": ["voice", "language"]}}
REPORT = {"after": "version", "fn": "tests.flows.project_stages.stages:count_rows"}


def _params(folder: Path, extra: list[dict]) -> Path:
    params = example_params()
    params["stages"] = {"extra": extra}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _summary(settings, record) -> dict:
    return json.loads((settings.paths.runs / record.run_id / "summary.json").read_text())


def _check_dedupe(settings, record) -> set[str]:
    """The stage ran after transform, its drops are quarantined and gone from the model inputs; returns them."""
    summary = _summary(settings, record)
    names = list(summary["stages"])
    assert names.index("dedupe_by_metadata") == names.index("transform") + 1
    stage = summary["stages"]["dedupe_by_metadata"]
    assert stage["rows_in"] == summary["stages"]["transform"]["rows_out"]
    assert stage["rows_quarantined"] > 0 and stage["reasons"] == {"dropped_by_stage": stage["rows_quarantined"]}
    assert stage["rows_out"] == stage["kept_combinations"] == summary["stages"]["label"]["rows_in"]
    assert stage["text_dtypes"] == ["object"]  # the rows in flight hold text in Arrow; a stage gets objects
    dropped = load_jsonl(settings.paths.quarantine / record.batch_id / "dedupe_by_metadata.jsonl")
    assert {row["reason"] for row in dropped} == {"dropped_by_stage"}
    assert all(row["detail"].startswith("same voice, language as ") for row in dropped)
    ids = {row["sample_id"] for row in dropped}
    inputs = load_model_inputs(settings.paths.batch_inputs(record.batch_id))
    assert not ids & set(inputs.sample_id) and len(inputs) == stage["rows_out"]
    assert summary["stages"]["count_rows"]["rows_seen"] == stage["rows_out"]
    assert summary["stages"]["count_rows"]["batch_seen"] == record.batch_id
    return ids


def test_a_projects_stage_runs_where_it_says_and_is_cached(tmp_path, demo_batch_factory):
    from flows.pipeline import run_ingest_stages

    settings = load_settings(tmp_path / "home", _params(tmp_path, [DEDUPE, REPORT]))
    batch = demo_batch_factory(samples=80, seed=31)
    first = run_ingest_stages(settings, batch, run_id="plain-1")
    dropped = _check_dedupe(settings, first)
    again = run_ingest_stages(settings, batch, run_id="plain-2")
    cache = _summary(settings, again)["cache"]
    assert cache["dedupe_by_metadata"]["cached"] and cache["dedupe_by_metadata"]["computed_by"] == "plain-1"
    assert _check_dedupe(settings, again) == dropped
    # Its own params are part of its key: other fields are another stage result.
    other = load_settings(tmp_path / "home", _params(tmp_path, [{**DEDUPE, "params": {"fields": ["voice"]}}, REPORT]))
    third = run_ingest_stages(other, batch, run_id="plain-3")
    assert not _summary(other, third)["cache"]["dedupe_by_metadata"]["cached"]


def test_the_prefect_driver_runs_it_as_a_task_with_the_same_result(tmp_path, tmp_path_factory, demo_batch_factory):
    from tests.prefect_support import prefect_harness

    from flows.lifecycle import call_as_task
    from flows.pipeline import run_ingest_stages

    settings = load_settings(tmp_path / "home", _params(tmp_path, [DEDUPE, REPORT]))
    batch = demo_batch_factory(samples=80, seed=31)
    with prefect_harness(tmp_path_factory):
        from prefect import flow

        @flow(name="ingest-with-a-project-stage")
        def ingest(run_id: str):
            return run_ingest_stages(settings, batch, call=call_as_task, run_id=run_id)

        record = ingest("prefect-1")
        _check_dedupe(settings, record)
        assert _summary(settings, ingest("prefect-2"))["cache"]["dedupe_by_metadata"]["cached"]


@pytest.mark.parametrize("entry, says", [
    ({"after": "nowhere", "fn": "tests.flows.project_stages.stages:count_rows"}, "after 'nowhere' names no stage"),
    ({"after": "clean", "fn": "tests.flows.project_stages.nope:count_rows"}, "cannot import"),
    ({"after": "clean", "fn": "tests.flows.project_stages.stages:missing"}, "has no function 'missing'"),
    ({"after": "clean", "fn": "tests.flows.project_stages.stages:takes_nothing"}, "must accept (rows, context)"),
    ({"after": "clean", "fn": "tests.flows.project_stages.stages"}, "is not an import path"),
    ({"after": "clean", "fn": "tests.flows.project_stages.stages:count_rows", "name": "label"}, "exists already"),
])
def test_a_bad_stage_entry_stops_start_up(tmp_path, entry, says):
    with pytest.raises(ValueError, match="stages.extra\\[0\\]") as err:
        load_settings(tmp_path / "home", _params(tmp_path, [entry]))
    assert says in str(err.value)


def test_flywheel_stage_runs_one_stage_and_reuses_those_before(tmp_path, demo_batch_factory):
    params = _params(tmp_path, [])
    batch = demo_batch_factory(samples=60, seed=32)
    env = {"FLYWHEEL_HOME": str(tmp_path / "home"), "FLYWHEEL_PARAMS": str(params), "PYTHONPATH": str(PROJECT)}
    import os

    def stage(name: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "flows.cli", "stage", name, "--source", str(batch)],
                              capture_output=True, text=True, env={**os.environ, **env}, cwd=PROJECT, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        settings = load_settings(tmp_path / "home", params)
        latest = max(settings.paths.runs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
        return json.loads(latest.read_text())

    clean = stage("clean")
    assert clean["command"] == "stage:clean" and list(clean["cache"]) == ["ingest", "clean"]
    assert not clean["cache"]["clean"]["cached"]
    transform = stage("transform")
    assert list(transform["cache"]) == ["ingest", "clean", "validate", "transform"]
    assert transform["cache"]["clean"]["cached"] and not transform["cache"]["transform"]["cached"]
    unknown = subprocess.run([sys.executable, "-m", "flows.cli", "stage", "bogus", "--source", str(batch)],
                             capture_output=True, text=True, env={**os.environ, **env}, cwd=PROJECT, timeout=600)
    assert unknown.returncode == 2 and "no stage 'bogus'" in unknown.stdout
