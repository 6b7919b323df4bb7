"""`flywheel monitor --batch <id>` on a real home: two plain lifecycle runs with fast params, then the
command checks the second batch against the champion's training window and writes a run summary."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.settings import load_settings
from tests.conftest import frequent_system_metrics, write_fast_lifecycle_params

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def home(demo_batch_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    params = write_fast_lifecycle_params(tmp_path_factory.mktemp("params") / "params.yaml")
    batches = []
    with frequent_system_metrics():
        for seed in (11, 12):
            result = runner.invoke(app, ["run", "--plain", "--source", str(demo_batch_factory(samples=80, seed=seed)),
                                         "--home", str(home), "--params", str(params)])
            assert result.exit_code == 0, result.output
            batches.append(_latest_summary(home, params)["batch_id"])
    return home, params, batches


def _latest_summary(home, params) -> dict:
    runs = load_settings(home, params).paths.runs
    newest = max(runs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def test_monitor_checks_a_batch_against_the_champions_window_and_writes_the_summary(home):
    home, params, (first, second) = home
    assert first != second
    result = runner.invoke(app, ["monitor", "--batch", second, "--home", str(home), "--params", str(params)],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "summary:" in result.output and "monitor:" in result.output
    summary = _latest_summary(home, params)
    assert summary["status"] == "succeeded" and summary["batch_id"] == second
    assert summary["source"] == second and summary["seconds"]["monitor"] > 0
    monitor = summary["monitor"]
    assert monitor["status"] in {"drift", "no_drift"}
    assert monitor["batch"] == second and first in monitor["reference_batches"] and second not in monitor["reference_batches"]
    assert {"data_drift", "embedding_drift", "prediction_drift"} <= set(monitor["checks"])


def test_monitor_of_an_unknown_batch_exits_non_zero(home):
    home, params, _ = home
    result = runner.invoke(app, ["monitor", "--batch", "batch-404", "--home", str(home), "--params", str(params)])
    assert result.exit_code != 0
    assert "cannot monitor" in result.output
