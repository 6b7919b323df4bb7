"""The model API speaks the served version's task: class names and prompts from the version's own
task.json, the modalities its towers were trained on (RGB images, depth maps), nothing else."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from features.task import Task
from models.serving.app import create_app
from models.serving.holder import ModelHolder, ServingKey
from models.serving.inference_log import InferenceLog, load_inference_log
from models.serving.loading import served_task
from models.serving.payloads import PayloadLimits
from tests.unit.task_support import SHAPES

LIMITS = PayloadLimits(max_image_pixels=250_000, max_audio_seconds=5.0, max_text_chars=200)
SPEC = {"image_size": 16, "image_channels": 3, "n_mels": 40, "audio_frames": 100, "sample_rate": 16000,
        "silence_db": 40.0, "depth_size": 16, "thermal_size": 16, "imu_length": 160}


def shapes_model():
    """An untrained RGB image + text + depth model serving the 3-class shapes task."""
    from models.imagebind import ImageBind, ImageBindConfig, config_modalities
    from models.serving.scoring import ServedModel, imagebind_serving_spec

    torch.manual_seed(0)
    model = ImageBind(ImageBindConfig(image_size=16, image_channels=3, depth_image_size=16,
                                      modalities=config_modalities(["depth"]))).eval()
    return ServedModel("flywheel-imagebind", "4", model, dict(SPEC), SHAPES,
                       imagebind_serving_spec(model, SHAPES, lambda: ()), time.time(), family="imagebind")


@pytest.fixture(scope="module")
def served():
    return shapes_model()


@pytest.fixture
def api(served, tmp_path):
    holder = ModelHolder(lambda: ServingKey(served.version), lambda key: served, poll_seconds=60)
    with TestClient(create_app(holder, InferenceLog(tmp_path / "log", "api"), LIMITS, 300_000)) as client:
        client.log_dir = tmp_path / "log"
        yield client


def png(colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def npy(array: np.ndarray, allow_pickle: bool = False) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return base64.b64encode(buffer.getvalue()).decode()


def test_model_lists_the_task_classes_and_the_trained_modalities(api):
    info = api.get("/model").json()
    assert info["classes"] == ["circle", "square", "triangle"]
    assert info["modalities"] == ["image", "text", "depth"]  # no audio tower: the task had none


def test_classify_answers_a_class_name_with_scores_keyed_by_name(api):
    body = api.post("/classify", json={"modality": "image", "data_base64": png((200, 30, 30))}).json()
    assert body["label"] in SHAPES.classes and list(body["scores"]) == list(SHAPES.classes)
    assert body["prompt"] == f"a photo of a {body['label']}"
    assert body["scores"][body["label"]] == max(body["scores"].values())
    record = load_inference_log(api.log_dir).iloc[-1]
    assert record["prediction_class"] == body["label"] and SHAPES.classes[record["prediction"]] == body["label"]


def test_colour_reaches_an_rgb_model(api):
    red = api.post("/embed", json={"modality": "image", "data_base64": png((220, 20, 20))}).json()["embedding"]
    green = api.post("/embed", json={"modality": "image", "data_base64": png((20, 220, 20))}).json()["embedding"]
    # Same luma would give one grayscale input; an RGB model sees two different images.
    assert not np.allclose(red, green, atol=1e-4)


def test_a_modality_without_a_tower_is_refused_naming_what_the_model_takes(api):
    from tests.unit.serving_support import tone_wav

    answer = api.post("/classify", json={"modality": "audio", "data_base64": base64.b64encode(tone_wav(300)).decode()})
    assert answer.status_code == 422
    assert "no audio tower" in answer.json()["detail"] and "image, text, depth" in answer.json()["detail"]


def test_a_depth_map_is_embedded_and_classified(api):
    depth = np.linspace(0.5, 3.0, 40 * 30, dtype=np.float32).reshape(40, 30)  # metres, another size than the model's
    embedded = api.post("/embed", json={"modality": "depth", "data_base64": npy(depth)})
    assert embedded.status_code == 200, embedded.text
    assert abs(np.linalg.norm(embedded.json()["embedding"]) - 1) < 1e-4
    assert api.post("/classify", json={"modality": "depth", "data_base64": npy(depth)}).json()["label"] in SHAPES.classes


@pytest.mark.parametrize("payload, message", [
    (base64.b64encode(b"not an array").decode(), "not a .npy array"),
    (npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "not a .npy array"),
    (npy(np.zeros((2, 3, 4), np.float32)), "2-D sensor map"),
    (npy(np.full((8, 8), np.nan, np.float32)), "finite numbers"),
])
def test_a_bad_sensor_array_is_a_422_naming_the_problem(api, payload, message):
    answer = api.post("/embed", json={"modality": "depth", "data_base64": payload})
    assert answer.status_code == 422 and message in answer.json()["detail"], answer.text


def test_a_version_without_task_json_answers_in_the_projects_classes_only_if_they_fit():
    assert served_task(None, SHAPES, "m v1", 3) is SHAPES
    assert served_task(SHAPES.to_dict(), Task(("a", "b"), (("a",), ("b",))), "m v1", 3).classes == SHAPES.classes
    with pytest.raises(ValueError, match="scores 10 classes, but params.yaml's task has 3"):
        served_task(None, SHAPES, "m v1", 10)
