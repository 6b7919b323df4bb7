"""The model API as a client sees it: happy paths, 4xx for every kind of bad input, the inference log,
the holder's swap rules, batch scoring. (Following the registry alias: tests/flows/test_serving_registry.py.)"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.serving.app import create_app
from models.serving.batch import score_model_inputs
from models.serving.holder import ModelHolder, ServingKey
from models.serving.inference_log import InferenceLog, load_inference_log
from models.serving.payloads import PayloadLimits
from tests.unit.serving_support import demo_inputs, digit_png, served_model, tone_wav

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")  # the example's prompts
LIMITS = PayloadLimits(max_image_pixels=250_000, max_audio_seconds=5.0, max_text_chars=200)
MAX_BODY = 300_000


@pytest.fixture(scope="module")
def served():
    return served_model(seed=0, version="1", inputs=demo_inputs())


def fixed_holder(served) -> ModelHolder:
    return ModelHolder(lambda: ServingKey(served.version) if served else None, lambda key: served, poll_seconds=60)


@pytest.fixture
def api(served, tmp_path):
    app = create_app(fixed_holder(served), InferenceLog(tmp_path / "inference", "api"), LIMITS, MAX_BODY)
    with TestClient(app) as client:
        client.log_dir = tmp_path / "inference"
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ITEMS = {"image": {"modality": "image", "data_base64": b64(digit_png(3))},
         "audio": {"modality": "audio", "data_base64": b64(tone_wav(300))},
         "text": {"modality": "text", "text": "a handwritten digit three"}}


def test_health_and_model_version(api):
    assert api.get("/health").json() == {"status": "ok", "model_version": "1"}
    info = api.get("/model").json()
    assert info["version"] == "1" and info["alias"] == "champion" and info["embed_dim"] == 64
    assert info["indexed_items"] == {"image": 24, "audio": 18, "text": 16}
    spec = api.get("/openapi.json").json()
    assert {"/embed", "/embed/upload", "/classify", "/classify/upload", "/search", "/search/upload", "/health",
            "/model"} <= set(spec["paths"])


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_embed_returns_a_unit_vector_for_each_modality(api, modality):
    body = api.post("/embed", json=ITEMS[modality])
    assert body.status_code == 200, body.text
    vector = np.array(body.json()["embedding"])
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-4
    assert body.json()["model_version"] == "1"


def test_upload_and_base64_give_the_same_embedding(api):
    json_body = api.post("/embed", json=ITEMS["image"]).json()
    upload = api.post("/embed/upload", data={"modality": "image"}, files={"file": ("3.png", digit_png(3), "image/png")})
    assert upload.status_code == 200, upload.text
    assert np.allclose(json_body["embedding"], upload.json()["embedding"], atol=1e-6)
    text = api.post("/embed/upload", data={"modality": "text"}, files={"file": ("t.txt", b"a handwritten digit three")})
    assert np.allclose(text.json()["embedding"], api.post("/embed", json=ITEMS["text"]).json()["embedding"], atol=1e-5)


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_classify_is_the_models_zero_shot_prediction(api, served, modality):
    from models.evaluate import predict_zero_shot
    from models.serving.payloads import prepare_bytes, prepare_text
    from models.serving.scoring import MODALITY_KEYS
    from models.text import encode_class_prompts

    result = api.post("/classify", json=ITEMS[modality])
    assert result.status_code == 200, result.text
    body = result.json()
    prepared = (prepare_text(ITEMS["text"]["text"], LIMITS) if modality == "text"
                else prepare_bytes(modality, base64.b64decode(ITEMS[modality]["data_base64"]), served.spec, LIMITS))
    label, confidence = predict_zero_shot(served.model, MODALITY_KEYS[modality], prepared.values[None],
                                          encode_class_prompts(served.task.prompts))
    task = served.task
    assert body["label"] == task.classes[int(label[0])] and body["prompt"] == task.prompt_of(int(label[0]))
    assert body["confidence"] == pytest.approx(float(confidence[0]), abs=1e-5)
    assert list(body["scores"]) == list(task.classes) and sum(body["scores"].values()) == pytest.approx(1, abs=1e-4)
    assert body["scores"][body["label"]] == pytest.approx(body["confidence"], abs=1e-5)


def test_search_finds_an_ingested_item_from_its_own_image_and_audio(api):
    by_image = api.post("/search/upload", data={"modality": "image", "target": "image", "k": "3"},
                        files={"file": ("5.png", digit_png(5))}).json()
    assert by_image["hits"][0]["sample_id"] == "s005" and by_image["hits"][0]["score"] > 0.999
    assert by_image["hits"][0]["batch_id"] == "batch-1" and len(by_image["hits"]) == 3
    by_audio = api.post("/search", json={"modality": "audio", "data_base64": b64(tone_wav(200 + 40 * 5)),
                                         "target": "audio", "k": 1}).json()
    assert [h["sample_id"] for h in by_audio["hits"]] == ["s005"]


def test_search_crosses_modalities_within_the_target_items(api):
    text_to_images = api.post("/search", json={**ITEMS["text"], "target": "image", "k": 5}).json()
    assert len(text_to_images["hits"]) == 5 and text_to_images["target"] == "image"
    scores = [h["score"] for h in text_to_images["hits"]]
    assert scores == sorted(scores, reverse=True)
    image_to_audio = api.post("/search", json={**ITEMS["image"], "target": "audio", "k": 100}).json()
    with_audio = {f"s{i:03d}" for i in range(24) if i % 4}
    assert {h["sample_id"] for h in image_to_audio["hits"]} == with_audio  # only items that have audio
    audio_to_text = api.post("/search", json={**ITEMS["audio"], "target": "text", "k": 2}).json()
    assert len(audio_to_text["hits"]) == 2


def silent_wav() -> bytes:
    buffer = io.BytesIO()
    import soundfile as sf

    sf.write(buffer, np.zeros(8000, dtype=np.float32), 16000, format="WAV")
    return buffer.getvalue()


def big_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (600, 600)).save(buffer, format="PNG")  # 360,000 pixels, a few KB compressed
    return buffer.getvalue()


BAD_JSON = {
    "not base64": ({"modality": "image", "data_base64": "%%%not base64%%%"}, "base64"),
    "not an image": ({"modality": "image", "data_base64": b64(b"hello, I am text")}, "not a decodable image"),
    "not audio": ({"modality": "audio", "data_base64": b64(digit_png(1))}, "not decodable audio"),
    "silent audio": ({"modality": "audio", "data_base64": b64(silent_wav())}, "silence"),
    "too many pixels": ({"modality": "image", "data_base64": b64(big_png())}, "250000"),
    "too long audio": ({"modality": "audio", "data_base64": b64(tone_wav(300, seconds=6, rate=8000))}, "at most 5 s"),
    "empty text": ({"modality": "text", "text": "   "}, "empty"),
    "text too long": ({"modality": "text", "text": "x" * 201}, "at most 200"),
    "unknown modality": ({"modality": "smell", "text": "roses"}, "image"),
    "text sent as file": ({"modality": "text", "data_base64": b64(b"hi")}, "takes `text`"),
    "image sent as text": ({"modality": "image", "text": "a picture"}, "takes `data_base64`"),
    "wrong type": ({"modality": "text", "text": 42}, "string"),
    "extra field": ({"modality": "text", "text": "hi", "colour": "red"}, "colour"),
    "empty image": ({"modality": "image", "data_base64": ""}, "empty"),
}


@pytest.mark.parametrize("case", list(BAD_JSON), ids=list(BAD_JSON))
def test_bad_input_is_a_4xx_naming_the_problem(api, case):
    body, expected = BAD_JSON[case]
    for endpoint in ("/embed", "/classify"):
        response = api.post(endpoint, json=body)
        assert 400 <= response.status_code < 500, (endpoint, response.status_code, response.text)
        assert expected in response.text, response.text


@pytest.mark.parametrize("body,expected", [
    ({"modality": "text", "text": "hi", "target": "video"}, "image"),
    ({"modality": "text", "text": "hi", "target": "image", "k": 0}, "greater than or equal to 1"),
    ({"modality": "text", "text": "hi", "target": "image", "k": "many"}, "integer"),
    ({"modality": "text", "text": "hi"}, "target"),
])
def test_bad_search_queries_are_422(api, body, expected):
    response = api.post("/search", json=body)
    assert response.status_code == 422 and expected in response.text


def test_malformed_bodies_and_uploads_are_4xx(api):
    assert api.post("/embed", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert api.post("/embed", content=b"\x00\xff" * 10, headers={"content-type": "application/json"}).status_code == 422
    assert api.post("/embed/upload", data={"modality": "image"}).status_code == 422  # no file
    assert api.post("/embed/upload", data={"modality": "smell"}, files={"file": ("x", b"abc")}).status_code == 422
    assert api.post("/classify/upload", data={"modality": "audio"}, files={"file": ("x.wav", b"RIFF....")}).status_code == 422
    assert api.post("/embed/upload", data={"modality": "text"}, files={"file": ("t", b"\xff\xfe\xfa")}).status_code == 422
    assert api.post("/search/upload", data={"modality": "image", "target": "image", "k": "0"},
                    files={"file": ("5.png", digit_png(5))}).status_code == 422


def test_oversize_bodies_are_413_declared_or_streamed(api):
    huge = {"modality": "image", "data_base64": "A" * (MAX_BODY + 10)}
    declared = api.post("/embed", json=huge)
    assert declared.status_code == 413 and str(MAX_BODY) in declared.json()["detail"]
    streamed = api.post("/embed", content=iter([b'{"modality": "image", "data_base64": "', b"A" * (MAX_BODY + 10), b'"}']),
                        headers={"content-type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    upload = api.post("/embed/upload", data={"modality": "image"}, files={"file": ("big.png", b"\0" * (MAX_BODY + 1))})
    assert upload.status_code == 413
    assert api.get("/health").json()["status"] == "ok"


def test_without_a_model_the_api_says_so_with_503(tmp_path):
    app = create_app(fixed_holder(None), InferenceLog(tmp_path / "inference", "api"), LIMITS, MAX_BODY)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 503
        response = client.post("/classify", json=ITEMS["text"])
        assert response.status_code == 503 and "@champion" in response.json()["detail"]


def test_every_request_lands_in_the_inference_log(api):
    api.post("/classify", json=ITEMS["image"])
    api.post("/embed", json=ITEMS["audio"])
    api.post("/search", json={**ITEMS["text"], "target": "image", "k": 2})
    api.post("/classify", json=BAD_JSON["not an image"][0])
    api.post("/classify", json={"modality": "smell"})
    log = load_inference_log(api.log_dir)
    assert list(log["endpoint"]) == ["/classify", "/embed", "/search", "/classify", "/classify"]
    assert list(log["status"]) == [200, 200, 200, 422, 422]
    image, audio, search, bad, invalid = log.to_dict("records")
    assert image["model_version"] == "1" and image["modality"] == "image" and image["source"] == "api"
    assert image["image_width"] == 8 and 0 < image["img_contrast"] < 1 and image["latency_ms"] > 0
    assert len(image["embedding_head"]) == 8 and len(image["embedding_sha1"]) == 16
    assert 0 <= image["prediction"] <= 9 and 0 < image["confidence"] <= 1
    assert image["prediction_class"] == str(int(image["prediction"]))  # the digits example names class k "k"
    assert image["prediction_prompt"] == f"a handwritten digit {DIGIT_WORDS[int(image['prediction'])]}"
    assert audio["aud_seconds"] == pytest.approx(0.5, abs=0.01) and audio["aud_rms_db"] < 0
    assert search["search_target"] == "image" and search["top_sample_id"].startswith("s")
    assert search["text_chars"] == len(ITEMS["text"]["text"])
    assert "not a decodable image" in bad["error"] and bad["model_version"] == "1"
    assert invalid["status"] == 422 and invalid["error"]


def test_a_request_keeps_the_model_it_started_with_across_a_swap(served):
    other = served_model(seed=1, version="2")
    versions = iter(["1", "2"])
    holder = ModelHolder(lambda: ServingKey(next(versions)), lambda key: served if key.version == "1" else other, 60)
    holder.refresh()
    in_flight = holder.current()
    assert holder.refresh() and holder.current().version == "2"
    assert in_flight.version == "1" and in_flight.model is served.model  # untouched by the swap


def test_a_failed_load_keeps_the_old_model_serving_and_is_retried(served):
    attempts = []

    def load(key):
        attempts.append(key.version)
        if key.version == "2" and len(attempts) == 2:
            raise OSError("artifact download interrupted")
        return served if key.version == "1" else served_model(seed=1, version="2")

    alias = ["1"]
    holder = ModelHolder(lambda: ServingKey(alias[0]), load, 60)
    holder.refresh()
    alias[0] = "2"
    assert not holder.refresh()
    assert holder.current().version == "1" and "interrupted" in holder.last_error and holder.alias_version == "2"
    assert holder.refresh() and holder.current().version == "2" and holder.last_error is None


def test_batch_scoring_logs_every_present_item_like_the_api(api, served, tmp_path):
    inputs = demo_inputs()
    records = score_model_inputs(served, "batch-1", [inputs])
    assert len(records) == inputs.has_image.sum() + inputs.has_audio.sum() + inputs.has_caption.sum()
    log = InferenceLog(tmp_path / "batch-log", "batch")
    log.write_many(records)
    batch = load_inference_log(tmp_path / "batch-log")
    api.post("/classify", json=ITEMS["image"])
    request = load_inference_log(api.log_dir).iloc[-1]
    shared = {"timestamp", "source", "endpoint", "status", "model_version", "modality", "latency_ms", "input_mean",
              "input_std", "embedding_norm", "embedding_head", "embedding_sha1", "prediction", "prediction_class", "prediction_prompt", "confidence"}
    assert shared <= set(batch.columns) and shared <= set(request.index)
    first_image = batch[(batch["modality"] == "image") & (batch["sample_id"] == "s003")].iloc[0]
    # The same digit through the API and through its stored model input: same embedding, same prediction.
    assert first_image["embedding_sha1"] == request["embedding_sha1"] and first_image["prediction"] == request["prediction"]
    assert set(batch["source"]) == {"batch"} and set(batch["model_version"]) == {"1"}
