"""`train.family: lora` through the whole lifecycle flow: two runs on the demo data, the first
promotes a caption classifier, the second is gated against it on the golden captions."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from features.store import read_feature_table
from flows.lifecycle import lifecycle_flow
from flows.settings import load_settings
from tests.conftest import frequent_system_metrics, write_fast_lifecycle_params
from tests.prefect_support import prefect_harness

pytestmark = pytest.mark.slow

STEPS = 30  # a short fine-tune: ~5 s on two cores, well above chance on the golden captions


def write_lora_params(path):
    """The fast lifecycle params with the lora family, a short fine-tune and a gate every model passes."""
    write_fast_lifecycle_params(path)
    params = yaml.safe_load(path.read_text())
    params["train"]["family"] = "lora"
    params["train"].setdefault("lora", {}).update(steps=STEPS, min_labelled_rows=10)
    lora_gate = params["gate"]["families"]["lora"]
    lora_gate["thresholds"] = {name: {**t, "min": 0.0, "max_drop": 1.0} if "min" in t else t
                               for name, t in lora_gate["thresholds"].items()}
    lora_gate["thresholds"]["model_size_mb"] = {"max": 120.0, "max_drop_rel": 0.5}
    lora_gate["thresholds"]["p95_latency_ms"] = {"max": 1000.0, "max_drop": 1000.0}
    lora_gate["slices"] = {"class": {"caption_acc": {"min": 0.0, "max_drop": 1.0}}}
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def lora_runs(demo_batch_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("home-lora")
    settings = load_settings(home, write_lora_params(tmp_path_factory.mktemp("params-lora") / "params.yaml"))
    with prefect_harness(tmp_path_factory), frequent_system_metrics():
        first = lifecycle_flow(settings, demo_batch_factory(samples=80, seed=11), "lora-run-1")
        second = lifecycle_flow(settings, demo_batch_factory(samples=80, seed=12), "lora-run-2")
    return settings, first, second


def test_the_lora_family_registers_under_its_own_name_and_the_second_run_is_gated_against_the_first(lora_runs):
    settings, first, second = lora_runs
    assert settings.params.registry.model_name == "flywheel-lora"
    assert first.model == {"name": "flywheel-lora", "version": "1", "champion": "1"}
    assert first.gate["passed"] and first.gate["lineage"]["champion_version"] is None
    assert first.gate["lineage"]["family"] == "lora"
    assert second.model["version"] == "2" and second.gate["lineage"]["champion_version"] == "1"
    checks = {(c["metric"], c["kind"], c["slice"]) for c in second.gate["checks"]}
    assert {("caption_acc", "change", None), ("p95_latency_ms", "change", None),
            ("model_size_mb", "change_rel", None)} <= checks
    # Every class slice of the golden captions is judged, or listed as too small (40 golden rows here).
    judged = {slice_ for metric, _, slice_ in checks if metric == "caption_acc" and slice_}
    listed = {entry.split(" ")[0] for entry in second.gate["skipped_slices"]}
    assert {f"class={k}" for k in range(10)} <= judged | listed
    assert set(second.gate["challenger"]) == {"caption_acc", "p95_latency_ms", "model_size_mb"}
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    names = {m.name for m in client.search_registered_models()}
    assert names == {"flywheel-lora"}  # nothing under the imagebind family's name
    assert client.get_model_version("flywheel-lora", "2").tags["family"] == "lora"
    assert str(client.get_model_version_by_alias("flywheel-lora", "champion").version) == second.model["champion"]


def test_the_lora_run_logs_its_training_and_a_text_pyfunc(lora_runs):
    settings, first, _ = lora_runs
    assert 0.3 < first.train["metrics"]["caption_acc"] <= 1.0  # chance is 0.1
    assert first.train["labelled_rows"] < first.train["rows"]  # unlabelled captions were skipped
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    run = client.get_run(first.train["mlflow_run_id"])
    assert run.data.params["family"] == "lora" and run.data.params["lora.r"] == "8"
    assert float(run.data.metrics["trainable_share"]) < 0.01
    assert run.data.metrics["caption_acc"] == first.train["metrics"]["caption_acc"]
    assert any(name.startswith("per_class_caption_acc_") for name in run.data.metrics)
    assert "plots/confusion_caption.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    losses = client.get_metric_history(run.info.run_id, "lora.loss")
    assert len(losses) == STEPS and losses[-1].value < losses[0].value
    assert client.get_metric_history(run.info.run_id, "lora.epoch_loss")
    model = mlflow.pyfunc.load_model(first.train["model_uri"])
    assert [c.name for c in model.metadata.get_input_schema().inputs] == ["text"]
    out = model.predict(pd.DataFrame({"text": ["the digit seven", "die Ziffer drei"]}))
    assert list(out.columns) == ["label", "class_index", "confidence", "scores"] and len(out["scores"][0]) == 10
    assert set(out["label"]) <= set(settings.task.classes)  # class names, from the model's own task.json
    with pytest.raises(Exception, match=r"missing inputs \['text'\]"):
        model.predict(pd.DataFrame({"image_path": ["x.png"]}))


def test_the_logged_classifier_carries_the_task_it_was_trained_for(lora_runs, tmp_path):
    import mlflow

    from features.task import Task
    from flows.stage_config import registry_for

    settings, first, _ = lora_runs
    registry_for(settings).client()  # points MLflow's fluent API at this store
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=first.train["model_uri"], dst_path=str(tmp_path)))
    (task_file,) = local.rglob("task.json")  # beside the classifier's weights, where serving reads it
    saved = Task.from_dict(json.loads(task_file.read_text()))
    assert (saved.classes, saved.prompts) == (settings.task.classes, settings.task.prompts)
    assert json.loads((task_file.parent / "config.json").read_text())["num_classes"] == settings.task.n_classes


def test_a_lora_champion_votes_on_captions_and_monitoring_skips_embeddings_with_a_reason(lora_runs):
    settings, _, second = lora_runs
    labels = read_feature_table(settings.paths.feast, "labels")
    votes = [json.loads(v) for v in labels["label_votes"]]
    assert any("champion_text" in v for v in votes)  # run 2's batch, labelled while v1 was champion
    assert not any("champion_image" in v for v in votes)
    monitor = second.monitor
    assert monitor["status"] in {"drift", "no_drift"}
    assert monitor["checks"]["embedding_drift"]["status"] == "skipped"
    assert "lora" in monitor["checks"]["embedding_drift"]["reason"]
    assert "text" in monitor["checks"]["prediction_drift"]["items"]


def test_the_api_serves_a_lora_champion_for_text_classification_only(lora_runs):
    import base64
    import threading

    from fastapi.testclient import TestClient

    from flows.serving import build_app
    from models.serving.inference_log import load_inference_log
    from tests.unit.serving_support import digit_png

    settings, _, second = lora_runs
    with TestClient(build_app(settings)) as client:
        info = client.get("/model").json()
        assert (info["name"], info["version"], info["family"]) == ("flywheel-lora", second.model["champion"], "lora")
        assert info["modalities"] == ["text"] and info["embed_dim"] is None
        answer = client.post("/classify", json={"modality": "text", "text": "die Ziffer drei"})
        assert answer.status_code == 200
        body = answer.json()
        assert body["label"] in settings.task.classes and list(body["scores"]) == list(settings.task.classes)
        assert abs(sum(body["scores"].values()) - 1) < 1e-4
        image = client.post("/classify", json={"modality": "image", "data_base64": base64.b64encode(digit_png(3)).decode()})
        assert image.status_code == 422 and "lora" in image.json()["detail"] and "text" in image.json()["detail"]
        embed = client.post("/embed", json={"modality": "text", "text": "the digit seven"})
        assert embed.status_code == 422 and "/classify" in embed.json()["detail"]
        search = client.post("/search", json={"modality": "text", "text": "seven", "target": "text"})
        assert search.status_code == 422
        assert client.post("/classify", json={"modality": "text", "text": "  "}).status_code == 422
        statuses: list[int] = []  # requests in parallel threads share one tokenizer and one model

        def classify_many(word: str) -> None:
            statuses.extend(client.post("/classify", json={"modality": "text", "text": f"le chiffre {word}"}).status_code
                            for _ in range(10))

        threads = [threading.Thread(target=classify_many, args=(word,)) for word in ("trois", "sept", "neuf")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 30
    log = load_inference_log(settings.paths.inference, None)
    served = log[(log["endpoint"] == "/classify") & (log["status"] == 200)]
    assert set(served["modality"]) == {"text"} and len(served) == 31 and served["prediction"].notna().all()


def test_batch_scoring_with_a_lora_champion_logs_caption_classes_that_monitoring_checks(lora_runs, tmp_path):
    from flows.monitor_stage import monitor_inference_log
    from flows.serving import score_batch
    from models.serving.inference_log import load_inference_log

    settings, _, second = lora_runs
    scored = score_batch(settings, second.batch_id)
    assert scored.model_version == second.model["champion"] and set(scored.per_modality) == {"text"}
    log = load_inference_log(settings.paths.inference, None)
    batch = log[log["endpoint"] == "batch/classify"]
    assert len(batch) == scored.records and batch["prediction"].between(0, 9).all()
    checked = monitor_inference_log(settings, tmp_path)
    assert checked["status"] in {"drift", "no_drift"}
    assert list(checked["checks"]["prediction_drift"]["items"]) == ["text"]
    assert checked["checks"]["embedding_drift"]["status"] == "skipped" and "lora" in checked["checks"]["embedding_drift"]["reason"]


def test_too_few_labelled_captions_stop_training_with_the_count_and_the_setting(lora_runs):
    import dataclasses

    from flows.model_stages import stage_train

    settings, _, _ = lora_runs
    lora = settings.params.train.lora.model_copy(update={"min_labelled_rows": 10_000})
    params = settings.params.model_copy(update={"train": settings.params.train.model_copy(update={"lora": lora})})
    with pytest.raises(ValueError, match=r"has \d+ captions with a trusted label; the lora family needs at least "
                                         r"train\.lora\.min_labelled_rows=10000"):
        stage_train(dataclasses.replace(settings, params=params), "too-few-labels")
