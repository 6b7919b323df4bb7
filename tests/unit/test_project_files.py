"""The declarative files users run directly: docker-compose.yml, dvc.yaml, .dvc/config, params.yaml."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import yaml

from flows.settings import load_params

PROJECT = Path(__file__).resolve().parents[2]


def test_compose_stack_has_the_services_with_healthchecks_and_no_literal_secrets():
    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "redis", "mlflow", "prefect-server", "evidently-ui"} <= set(services)
    for name in ("postgres", "minio", "redis", "mlflow", "prefect-server"):
        assert "healthcheck" in services[name], name
    text = (PROJECT / "docker-compose.yml").read_text()
    assert "change-me" not in text  # credentials come from .env (see .env.example)
    for name, service in services.items():
        env = service.get("environment", {})
        if "DO_NOT_TRACK" in str(env) or name in ("mlflow", "prefect-server", "evidently-ui"):
            assert env.get("DO_NOT_TRACK") == "1", f"{name} must run with telemetry off"


def test_dvc_pipeline_parses_and_analytics_are_off():
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(sys.executable).with_name("dvc"))
    listed = subprocess.run([dvc, "stage", "list"], cwd=PROJECT, env=env, capture_output=True, text=True, check=True)
    assert "lifecycle@batch-001" in listed.stdout and "demo_data@batch-002" in listed.stdout
    config = configparser.ConfigParser()
    config.read(PROJECT / ".dvc" / "config")
    assert config["core"]["analytics"] == "false" and config["core"]["check_update"] == "false"


def test_shipped_params_file_is_valid_and_every_gate_metric_is_evaluated():
    params = load_params(PROJECT / "params.yaml")
    from models.evaluate import evaluate_model  # noqa: F401  (the gate reads its metric names)

    assert set(params.gate.thresholds) <= {"zero_shot_image_acc", "zero_shot_audio_acc", "audio_to_image_r1",
                                           "p95_latency_ms", "model_size_mb"}
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    declared = {p for stage in stages.values() for p in stage["do"].get("params", [])}
    assert declared <= set(yaml.safe_load((PROJECT / "params.yaml").read_text()))
