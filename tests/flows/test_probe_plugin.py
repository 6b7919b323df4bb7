"""A third model family proves the seam: `tests/plugins/flywheel-probe`, a linear probe on frozen MiniLM
caption embeddings, installed like a user's plug-in (pip, its own pyproject.toml, an entry point in
`flywheel.families`), never touching flywheel's own files or its venv.

In a fresh interpreter with the plug-in on its path, the family is found by its entry point and by its
import path; the plain lifecycle (`run_stages`, no Prefect) trains it on two small batches, registers it as
`flywheel-probe`, gates the second version against the first with `gate.families.probe`, labels with the
probe champion's votes and monitors through it; the API then serves it for /classify of text only, and
batch scoring logs its classes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT, write_fast_lifecycle_params

pytestmark = pytest.mark.slow

PLUGIN = Path(__file__).parents[1] / "plugins" / "flywheel-probe"
ANY = {"min": 0.0, "max_drop": 1.0}
PROBE_GATE = {"thresholds": {"caption_acc": ANY, "p95_latency_ms": {"max": 60_000.0, "max_drop": 60_000.0},
                             "model_size_mb": {"max": 1.0}},  # a 384 x 10 head: about 0.015 MB
              "slices": {"class": {"caption_acc": ANY}}}

SCRIPT = r"""
import json, sys
from pathlib import Path

from models.family import load_family, registered_families

home, params, first_batch, second_batch = map(Path, sys.argv[1:5])
out = {"registered": registered_families(),
       "by_name": type(load_family("probe")).__qualname__,
       "same_class": type(load_family("probe")) is type(load_family("flywheel_probe:LinearProbeFamily"))}

from fastapi.testclient import TestClient

from flows.pipeline import run_stages
from flows.serving import build_app, score_batch
from flows.settings import load_settings

settings = load_settings(home, params)
out["model_name"] = settings.params.registry.model_name
first = run_stages(settings, first_batch)
second = run_stages(settings, second_batch)
out["first"] = {"model": first.model, "gate": first.gate, "train": first.train}
out["second"] = {"model": second.model, "gate": second.gate, "monitor": second.monitor}
with TestClient(build_app(settings)) as client:
    out["info"] = client.get("/model").json()
    out["classify"] = client.post("/classify", json={"modality": "text", "text": "the digit seven"}).json()
    refused = client.post("/embed", json={"modality": "text", "text": "the digit seven"})
    out["embed"] = [refused.status_code, refused.json()["detail"]]
scored = score_batch(settings, second.batch_id)
out["scored"] = {"records": scored.records, "per_modality": scored.per_modality}
from features.store import read_feature_table
labels = read_feature_table(settings.paths.feast, "labels")
out["votes"] = sorted({key for votes in labels["label_votes"] for key in json.loads(votes)})
print("RESULT " + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plug-in pip-installed into a folder of its own (a copy is built, so the source tree stays clean)."""
    source = tmp_path_factory.mktemp("probe-src") / "flywheel-probe"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path_factory.mktemp("probe-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    return site


@pytest.fixture(scope="module")
def probe_run(plugin_site, tmp_path_factory, small_golden_batch, demo_batch_factory) -> dict:
    folder = tmp_path_factory.mktemp("probe-project")
    params_path = write_fast_lifecycle_params(folder / "params.yaml", golden=small_golden_batch)
    params = yaml.safe_load(params_path.read_text())
    params["train"]["family"] = "probe"  # by its entry point's name
    params["gate"]["families"]["probe"] = PROBE_GATE
    params_path.write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(PROJECT)]),
           "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(folder / "home"), str(params_path),
                           str(demo_batch_factory(samples=60, seed=21)), str(demo_batch_factory(samples=60, seed=22))],
                          env=env, cwd=folder, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def test_the_plugin_is_found_by_entry_point_and_by_import_path(probe_run):
    assert probe_run["registered"]["probe"] == "flywheel_probe:LinearProbeFamily"
    assert {"imagebind", "lora"} <= set(probe_run["registered"])
    assert probe_run["by_name"] == "LinearProbeFamily" and probe_run["same_class"]


def test_the_probe_trains_registers_under_its_own_name_and_is_gated_with_its_own_thresholds(probe_run):
    first, second = probe_run["first"], probe_run["second"]
    assert probe_run["model_name"] == "flywheel-probe"
    assert first["model"] == {"name": "flywheel-probe", "version": "1", "champion": "1"}
    assert first["gate"]["passed"] and first["gate"]["lineage"]["family"] == "probe"
    assert 0.0 <= first["train"]["metrics"]["caption_acc"] <= 1.0
    assert second["model"]["version"] == "2" and second["gate"]["lineage"]["champion_version"] == "1"
    checks = {(c["metric"], c["kind"]) for c in second["gate"]["checks"]}
    assert {("caption_acc", "change"), ("model_size_mb", "max"), ("p95_latency_ms", "max")} <= checks
    [size] = [c for c in second["gate"]["checks"] if c["metric"] == "model_size_mb" and c["kind"] == "max"]
    assert size["observed"] < 0.1 and size["passed"]  # the probe's own budget, judged on its own size


def test_the_probe_champion_votes_and_is_monitored_through_its_family(probe_run):
    assert "champion_text" in probe_run["votes"] and "champion_image" not in probe_run["votes"]
    checks = probe_run["second"]["monitor"]["checks"]
    assert checks["embedding_drift"]["status"] == "skipped" and "linear probe" in checks["embedding_drift"]["reason"]
    assert "text" in checks["prediction_drift"]["items"]


def test_the_api_serves_the_probe_for_text_classification_and_batch_scoring_logs_it(probe_run):
    info = probe_run["info"]
    assert (info["name"], info["family"], info["modalities"], info["endpoints"]) == \
        ("flywheel-probe", "probe", ["text"], ["/classify"])
    assert info["embed_dim"] is None
    assert probe_run["classify"]["label"] in [str(k) for k in range(10)]
    status, detail = probe_run["embed"]
    assert status == 422 and "linear probe" in detail and "/classify" in detail
    assert probe_run["scored"]["per_modality"].keys() == {"text"} and probe_run["scored"]["records"] > 0
