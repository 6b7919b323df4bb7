"""A user's own task through the whole lifecycle, with only its params.yaml `task:` written: three shape
classes named by strings, RGB images and captions, no audio. Two runs: a champion, then a gated second
model; monitoring; `/classify` answers a class name."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import yaml

from flows.lifecycle import lifecycle_flow
from flows.settings import load_settings
from tests.conftest import UNREACHABLE_LATENCY_BOUNDS, example_params
from tests.prefect_support import prefect_harness
from tests.flows.shapes_task import COLOURS, SHAPES, TASK, draw_shape, write_shapes_batch

pytestmark = pytest.mark.slow

ANY_ACCURACY = {"min": 0.0, "max_drop": 1.0}


def shapes_params(path: Path, golden: Path) -> Path:
    """The shipped defaults with the shapes task in place of the digits one."""
    params = example_params()
    params["task"] = {**TASK, "golden": str(golden)}
    params["demo"] = {}  # no generator: this project brings its own data
    params["label"]["functions"] = []
    params["train"].update(epochs_stage1=40, epochs_stage2=4, batch_size=32)  # ~4 steps an epoch on 120 rows
    gate = params["gate"]["families"]["imagebind"]
    gate["thresholds"] = {
        "zero_shot_image_acc": ANY_ACCURACY,
        "zero_shot_audio_acc": ANY_ACCURACY,  # the task has no audio: reported as not applicable
        "p95_latency_ms": UNREACHABLE_LATENCY_BOUNDS,
        "model_size_mb": {"max": 20.0, "max_drop_rel": 0.5},
    }
    gate["slices"] = {"class": {"zero_shot_image_acc": ANY_ACCURACY},
                      "camera": {"zero_shot_image_acc": ANY_ACCURACY}}
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def shapes_runs(tmp_path_factory):
    data = tmp_path_factory.mktemp("shapes")
    golden = write_shapes_batch(data / "golden", samples=45, seed=900, label_rate=1.0)
    settings = load_settings(data / ".flywheel", shapes_params(data / "params.yaml", golden))
    with prefect_harness(tmp_path_factory):
        first = lifecycle_flow(settings, write_shapes_batch(data / "batch-1", 120, seed=1, label_rate=0.5), "shapes-1")
        second = lifecycle_flow(settings, write_shapes_batch(data / "batch-2", 120, seed=2, label_rate=0.5), "shapes-2")
    return settings, first, second


def test_a_champion_that_beats_chance_and_a_gated_second_model(shapes_runs):
    settings, first, second = shapes_runs
    assert settings.task.classes == SHAPES and settings.task.image_channels == 3
    assert first.gate["passed"] and first.model["champion"] == "1"
    chance = 1 / len(SHAPES)
    assert first.train["metrics"]["zero_shot_image_acc"] > chance + 0.25, first.train["metrics"]
    assert not any("audio" in name for name in first.train["metrics"])  # no audio: no audio metric
    assert second.gate["lineage"]["champion_version"] == "1"
    assert any(check["kind"] == "change" for check in second.gate["checks"])
    slices = {check.get("slice") for check in second.gate["checks"]}
    assert {f"class={name}" for name in SHAPES} <= slices and "camera=cam-a" in slices
    not_applicable = [c for c in second.gate["checks"] if c["kind"] == "not_applicable"]
    assert [c["metric"] for c in not_applicable] == ["zero_shot_audio_acc"]


def test_monitoring_runs_and_says_which_checks_do_not_apply(shapes_runs):
    _, _, second = shapes_runs
    assert second.monitor["status"] in {"drift", "no_drift"}
    assert "audio" in second.monitor["checks"]["not_applicable"]["items"]
    assert "image" in second.monitor["checks"]["embedding_drift"]["items"]


def test_classify_answers_a_class_name_for_an_rgb_image(shapes_runs):
    import numpy as np
    from fastapi.testclient import TestClient

    from flows.serving import build_app

    settings, _, second = shapes_runs
    buffer = io.BytesIO()
    draw_shape("circle", COLOURS["red"], np.random.default_rng(5)).save(buffer, format="PNG")
    with TestClient(build_app(settings)) as client:
        info = client.get("/model").json()
        assert info["classes"] == list(SHAPES) and "image" in info["modalities"] and "audio" not in info["modalities"]
        answer = client.post("/classify", json={"modality": "image",
                                                "data_base64": base64.b64encode(buffer.getvalue()).decode()})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["label"] in SHAPES and set(body["scores"]) == set(SHAPES)
        assert body["prompt"] == f"a picture of a {body['label']}"
        text = client.post("/classify", json={"modality": "text", "text": "a green triangle"}).json()
        assert text["label"] == "triangle"
