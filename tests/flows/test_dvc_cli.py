"""The generated dvc.yaml under the real `dvc` CLI: repro, up to date, a params change, an experiment, plots.

One small project in a temporary git repo (fast params, the 40-row golden batch, one 40-row demo batch,
FLYWHEEL_HOME inside it and ignored by git and by DVC), driven step by step as a user would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT, write_fast_lifecycle_params

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent  # dvc and flywheel, installed beside this interpreter
BATCH = "batch-001"


def _env(root: Path) -> dict[str, str]:
    # The project's own settings only, but the session's cache folder (tests/conftest.shared_cache_dir), not ~/.cache
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLYWHEEL_", "MLFLOW_TRACKING", "DVC_")) or k == "FLYWHEEL_CACHE_DIR"}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONPATH": str(PROJECT),
            "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def _run(root: Path, *command: str) -> str:
    done = subprocess.run(command, cwd=root, env=_env(root), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def _commit(root: Path, message: str) -> None:
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def project(tmp_path_factory, small_golden_batch, demo_batch_factory) -> Path:
    """A git + DVC repo with params.yaml, the golden batch, one landing batch and its generated dvc.yaml."""
    root = tmp_path_factory.mktemp("dvc-project") / "project"
    root.mkdir()
    shutil.copytree(small_golden_batch, root / "golden")
    shutil.copytree(demo_batch_factory(samples=40, seed=1), root / "data" / "landing" / BATCH)
    params = yaml.safe_load(write_fast_lifecycle_params(root / "params.yaml").read_text())
    params["task"]["golden"] = "golden"  # inside the project: a dependency DVC tracks
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / ".gitignore").write_text(".flywheel/\n")
    (root / ".dvcignore").write_text(".flywheel/\n")  # the lake: a DVC repo of its own
    _run(root, "git", "init", "-q")
    _run(root, str(BIN / "dvc"), "init", "-q")
    _run(root, str(BIN / "flywheel"), "dvc-yaml", "--batch", BATCH)
    _commit(root, "a project")
    return root


def test_dvc_repro_exp_run_and_plots_on_the_generated_pipeline(project):
    dvc = str(BIN / "dvc")
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert list(stages) == [f"{name}_{BATCH}" for name in ("ingest", "clean", "validate", "transform", "label",
                                                          "version", "train", "register", "gate", "monitor")]

    first = _run(project, dvc, "repro")
    assert _ran(first) == list(stages)  # every stage, in lifecycle order
    folder = project / "dvc-stages" / BATCH
    train = json.loads((folder / "train.metrics.json").read_text())
    assert set(train) >= {"zero_shot_image_acc", "n_eval", "rows"} and train["n_eval"] == 40
    assert json.loads((folder / "clean.metrics.json").read_text())["rows_in"] == 40
    assert isinstance(json.loads((folder / "gate.metrics.json").read_text())["passed"], bool)
    assert (folder / "train.confusion" / "image.csv").read_text().startswith("actual,predicted\n")
    assert (folder / "train.recall_at_k" / "image_to_text.csv").read_text().startswith("k,recall\n1,")
    _commit(project, "reproduced")
    outs = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    again = _run(project, dvc, "repro")
    assert _ran(again) == [] and "up to date" in again
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == outs

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["monitor"]["drift_share"] = 0.4
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert _ran(_run(project, dvc, "repro")) == [f"monitor_{BATCH}"]  # train, register, gate re-loaded, not re-run
    _commit(project, "monitor.drift_share 0.4")

    ran = _ran(_run(project, dvc, "exp", "run", "-S", "train.lr=0.004", "-n", "lr-0004"))
    assert ran == [f"{name}_{BATCH}" for name in ("train", "register", "gate", "monitor")]
    shown = json.loads(_run(project, dvc, "exp", "show", "--json", "--no-fetch"))
    experiments = [rev for row in shown for exp in row.get("experiments") or [] for rev in exp["revs"]]
    [experiment] = [rev for rev in experiments if rev["name"] == "lr-0004"]
    assert experiment["data"]["params"]["params.yaml"]["data"]["train"]["lr"] == 0.004
    listed = experiment["data"]["metrics"][f"dvc-stages/{BATCH}/train.metrics.json"]["data"]

    from mlflow import MlflowClient

    # A client of its own: mlflow.set_tracking_uri would also set MLFLOW_TRACKING_URI for every later test here.
    client = MlflowClient(f"sqlite:///{project / '.flywheel' / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()], filter_string="tags.`dvc.exp_name` = 'lr-0004'")
    assert run.data.tags["dvc.stage"] == f"train_{BATCH}" and run.data.params["train.lr"] == "0.004"
    assert {k: run.data.metrics[k] for k in ("zero_shot_image_acc", "zero_shot_audio_acc", "n_eval")} == \
        {k: listed[k] for k in ("zero_shot_image_acc", "zero_shot_audio_acc", "n_eval")}

    _run(project, dvc, "plots", "show", "-o", "plots")
    html = (project / "plots" / "index.html").read_text()
    for plot in ("train_confusion_image_csv", "train_recall_at_k_image_to_text_csv", "monitor_drift_data_drift_csv"):
        assert f"dvc-stages_{BATCH}_{plot}" in html, plot  # each plot's element id
