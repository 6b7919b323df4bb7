"""Two `flywheel run --plain` processes started together on the same FLYWHEEL_HOME and the same batch:
the batch is ingested once, the feature tables hold each sample once, each run registers at most one
version and the aliases agree with the runs' summaries; the run that had to wait said which run it
waited for (features/locks.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features.ingest import list_ingested_batches
from features.store import read_feature_table
from tests.conftest import write_fast_lifecycle_params

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
FLYWHEEL = str(Path(sys.executable).with_name("flywheel"))


def test_two_runs_on_one_batch_ingest_it_once_and_register_at_most_one_version_each(tmp_path, demo_batch_factory,
                                                                                  small_golden_batch):
    from mlflow import MlflowClient

    from flows.settings import load_settings

    home, params = tmp_path / "home", write_fast_lifecycle_params(tmp_path / "params.yaml", golden=small_golden_batch)
    batch = demo_batch_factory(samples=80, seed=31)
    env = {**os.environ, "COLUMNS": "200"}
    command = [FLYWHEEL, "run", "--plain", "--home", str(home), "--params", str(params), "--source", str(batch)]
    runs = [subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=900) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, f"a run failed:\n{out[-3000:]}\n{err[-3000:]}"

    summaries = {p.parent.name: json.loads(p.read_text()) for p in (home / "runs").glob("*/summary.json")}
    assert len(summaries) == 2 and all(s["status"] == "succeeded" for s in summaries.values())
    batch_ids = {s["batch_id"] for s in summaries.values()}
    assert len(batch_ids) == 1
    (batch_id,) = batch_ids

    # One ingested copy, and nothing half-written left beside it.
    lake_raw = home / "lake" / "raw"
    assert list_ingested_batches(lake_raw) == [batch_id]
    assert sorted(p.name for p in lake_raw.iterdir() if p.name != ".locks") == [batch_id, f"{batch_id}.dvc"]

    # The feature store holds each accepted sample once per table.
    accepted = next(iter(summaries.values()))["stages"]["transform"]["rows_out"]
    for table in ("image_stats", "audio_stats", "caption_stats", "labels"):
        frame = read_feature_table(home / "feast", table)
        assert frame["sample_id"].is_unique and len(frame) == accepted, table

    # At most one version per run; every version in the registry belongs to one of the runs; the
    # aliases are the ones the runs' gates left.
    settings = load_settings(home, params)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    name = settings.params.registry.model_name
    registered = sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'"))
    claimed = sorted({s["model"]["version"] for s in summaries.values()})
    assert registered == claimed and 1 <= len(registered) <= 2
    aliases = {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}
    assert aliases["champion"] in registered and aliases.get("previous") != aliases["champion"]
    last = max(summaries.values(), key=lambda s: s["finished_at"])
    assert last["model"]["champion"] == aliases["champion"]

    # The second run waited for the batch, and said for whom.
    waits = [err for _, err in outputs if "waiting for run" in err]
    assert len(waits) == 1, [err[-2000:] for _, err in outputs]
    holder = waits[0].split("waiting for run ", 1)[1].split()[0]
    assert holder in summaries and f"batch {batch_id}" in waits[0]
