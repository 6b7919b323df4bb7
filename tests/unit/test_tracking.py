"""What a user sees on an MLflow training run: live epoch and step metrics, system metrics, the
dataset input, the evaluation metrics and plots, and a model with a signature that still predicts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import models.tracking as tracking
from models.artifacts import save_model
from models.evaluate import EvalData
from models.imagebind import DEPTH, TEXT, VISION, ImageBind, ImageBindConfig
from models.registry import Registry, log_training_run
from models.retrieval import RECALL_KS, RETRIEVAL_PAIRS
from models.train import STAGE_AUDIO_IMAGE, STAGE_IMAGE_TEXT, TrainingData, train_imagebind
from tests.unit.params_support import train_config as default_train_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROWS, EVAL_ROWS, CLASSES = 96, 40, 10
CLASS_NAMES = tuple(f"class-{k}" for k in range(CLASSES))
INPUT_SPEC = {"image_size": 16, "n_mels": 40, "audio_frames": 100, "sample_rate": 16000, "silence_db": 40.0}


def random_rows(rows: int, config: ImageBindConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.random((rows, 1, config.image_size, config.image_size), dtype=np.float32)
    audio = rng.normal(-13.0, 5.0, (rows, config.audio_frames, config.audio_n_mels)).astype(np.float32)
    return image, audio, np.arange(rows) % CLASSES


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory):
    """A tiny model trained inside a tracked run and logged with evaluation and dataset; (client, run)."""
    tmp = tmp_path_factory.mktemp("mlflow")
    config = ImageBindConfig()
    train_config = default_train_config(batch_size=32, epochs_stage1=2, epochs_stage2=2)
    image, audio, label = random_rows(ROWS, config, seed=0)
    text_emb = np.random.default_rng(1).normal(size=(ROWS, config.text_input_dim)).astype(np.float32)
    data = TrainingData(image=image, audio=audio, text_emb=text_emb, label=label)
    registry = Registry(f"sqlite:///{tmp}/mlflow.db", "tracking-test", tmp / "artifacts")
    registry.client()
    previous = os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "0.5"  # a run of a few seconds still gets samples
    try:
        with tracking.start_training_run(registry.experiment_id(), "tracked", {"flow_run": "test"}) as run:
            logger = tracking.EpochLogger(run.info.run_id, train_config, len(data))
            result = train_imagebind(data, config, train_config, on_epoch=logger, on_step_losses=logger.record_steps)
            eval_image, eval_audio, eval_label = random_rows(EVAL_ROWS, config, seed=2)
            golden = EvalData(image=eval_image, audio=eval_audio, label=eval_label)
            prompts = np.random.default_rng(3).normal(size=(CLASSES, config.text_input_dim)).astype(np.float32)
            model_dir = save_model(result.model, tmp / "imagebind")
            (model_dir / "input_spec.json").write_text(json.dumps(INPUT_SPEC))  # as stage_train writes it
            logged = log_training_run(
                registry, model_dir, {"train.epochs_stage1": 2}, result.history,
                {"zero_shot_image_acc": 0.5}, {"golden_version": "abc"}, "tracked",
                evaluation=tracking.RunEvaluation(result.model, golden, prompts, CLASS_NAMES),
                dataset=tracking.TrainingDataset([f"s{i}" for i in range(ROWS)], label, "lake/inputs@0123abcd"),
            )
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", None)
        else:
            os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = previous
    client = registry.client()
    return client, client.get_run(logged.run_id), logged, train_config


def test_epoch_metrics_are_logged_at_the_global_step_and_lr_at_every_step(tracked_run) -> None:
    client, run, _, train_config = tracked_run
    per_epoch = tracking.steps_per_epoch(ROWS, train_config.batch_size)
    loss = client.get_metric_history(run.info.run_id, f"{STAGE_IMAGE_TEXT}.loss")
    assert [m.step for m in loss] == [per_epoch, 2 * per_epoch]
    stage2 = client.get_metric_history(run.info.run_id, f"{STAGE_AUDIO_IMAGE}.loss")
    assert [m.step for m in stage2] == [3 * per_epoch, 4 * per_epoch]
    lr = client.get_metric_history(run.info.run_id, "lr")
    assert sorted(m.step for m in lr) == list(range(4 * per_epoch))
    assert max(m.value for m in lr) == pytest.approx(train_config.lr)
    assert run.data.tags["flow_run"] == "test" and run.data.tags["golden_version"] == "abc"


def test_every_optimiser_step_has_its_loss_and_each_epoch_loss_is_their_mean(tracked_run) -> None:
    client, run, _, train_config = tracked_run
    per_epoch = tracking.steps_per_epoch(ROWS, train_config.batch_size)
    for stage, first in ((STAGE_IMAGE_TEXT, 0), (STAGE_AUDIO_IMAGE, 2 * per_epoch)):
        steps = sorted(client.get_metric_history(run.info.run_id, f"{stage}.step_loss"), key=lambda m: m.step)
        assert [m.step for m in steps] == list(range(first, first + 2 * per_epoch))  # the same steps as `lr`
        epochs = sorted(client.get_metric_history(run.info.run_id, f"{stage}.loss"), key=lambda m: m.step)
        for epoch, logged in enumerate(epochs):
            values = [m.value for m in steps[epoch * per_epoch:(epoch + 1) * per_epoch]]
            assert logged.value == pytest.approx(float(np.mean(values)), rel=1e-5)


def test_system_metrics_are_sampled_while_the_run_is_open(tracked_run) -> None:
    _, run, _, _ = tracked_run
    system = [k for k in run.data.metrics if k.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system, sorted(run.data.metrics)


def test_retrieval_metrics_are_on_the_run_within_zero_and_one(tracked_run) -> None:
    _, run, _, _ = tracked_run
    expected = [f"golden.retrieval_{q}_to_{g}_r{k}" for q, g in RETRIEVAL_PAIRS for k in RECALL_KS]
    expected += ["golden.arithmetic_image_audio_r5", "golden.arithmetic_image_audio_r10"]
    for key in expected:
        assert 0.0 <= run.data.metrics[key] <= 1.0, key


def test_plots_are_png_artifacts(tracked_run, tmp_path) -> None:
    client, run, _, _ = tracked_run
    names = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert names == {"plots/confusion_image.png", "plots/confusion_audio.png", "plots/recall_at_k.png",
                     "plots/embedding_map.png"}
    for name in names:
        local = client.download_artifacts(run.info.run_id, name, str(tmp_path))
        with open(local, "rb") as handle:
            assert handle.read(8) == PNG_MAGIC, name


def test_the_training_window_is_a_dataset_input_with_the_lake_version(tracked_run) -> None:
    _, run, _, _ = tracked_run
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == tracking.DATASET_NAME
    assert dataset_input.dataset.digest == "0123abcd"
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_the_logged_model_has_a_signature_and_still_embeds_text(tracked_run) -> None:
    import mlflow
    import pandas as pd

    _, _, logged, _ = tracked_run
    model = mlflow.pyfunc.load_model(logged.model_uri)
    assert [c.name for c in model.metadata.get_input_schema().inputs] == ["text", "image_path", "audio_path"]
    assert model.metadata.saved_input_example_info is not None
    out = model.predict(pd.DataFrame({"text": ["a handwritten digit two", "the number nine"]}))
    assert list(out.columns) == ["text_embedding"] and len(out) == 2


def test_the_input_example_names_no_task():
    assert tracking.PYFUNC_INPUT_EXAMPLE["text"].tolist() == ["an example caption"]


# --- plots speak class names; only the modalities the evaluation rows carry are plotted ---------------


def test_the_confusion_matrix_axes_are_the_class_names():
    from models.plots import confusion_matrix_figure
    from tests.unit.task_support import SHAPES

    figure = confusion_matrix_figure(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]), SHAPES.classes, "shapes")
    axis = figure.axes[0]
    assert [t.get_text() for t in axis.get_xticklabels()] == ["circle", "square", "triangle"]
    assert [t.get_text() for t in axis.get_yticklabels()] == ["circle", "square", "triangle"]
    assert axis.get_xticklabels()[0].get_rotation() == 45  # long names are turned so they do not overlap
    assert "50.0%" in figure.get_suptitle()
    with pytest.raises(ValueError, match=r"predicted holds class indices \[3\] outside 0\.\.2"):
        confusion_matrix_figure(np.array([0]), np.array([3]), SHAPES.classes, "shapes")


def _legend_texts(figure) -> list[str]:
    return [t.get_text() for t in figure.axes[0].get_legend().get_texts()]


def test_the_embedding_map_legend_names_the_classes():
    from models.plots import embedding_map_figure
    from tests.unit.task_support import SHAPES

    rng = np.random.default_rng(0)
    label = {"image": np.array([0, 1, 2, 0, 1, 2]), "text": np.arange(3)}
    embedding = {name: rng.normal(size=(len(k), 8)) for name, k in label.items()}
    figure = embedding_map_figure(embedding, label, SHAPES.classes, "shapes")
    assert _legend_texts(figure) == ["image", "text", "circle", "square", "triangle"]


def test_an_embedding_map_of_many_classes_has_a_colour_each_and_a_capped_legend():
    from models.plots import MAP_LEGEND_MAX_CLASSES, class_colours, embedding_map_figure

    names = [f"species {k}" for k in range(30)]
    assert len(set(class_colours(30))) == 30 and len(set(class_colours(15))) == 15
    label = {"image": np.arange(60) % 30, "text": np.arange(30)}
    embedding = {name: np.random.default_rng(1).normal(size=(len(k), 8)) for name, k in label.items()}
    texts = _legend_texts(embedding_map_figure(embedding, label, names, "many"))
    shown = MAP_LEGEND_MAX_CLASSES - 1
    assert texts == ["image", "text", *names[:shown], f"… {30 - shown} more classes"]


@pytest.mark.parametrize("bound", [(), (DEPTH,)], ids=["images-only", "depth"])
def test_log_evaluation_plots_only_the_modalities_the_rows_carry(tmp_path, bound):
    import mlflow

    from models.evaluate import EvalData
    from models.imagebind import config_modalities
    from tests.unit.task_support import SHAPES

    config = ImageBindConfig(modalities=config_modalities(bound))
    assert set(config.modalities) == {VISION, TEXT, *bound}
    model = ImageBind(config)
    rng = np.random.default_rng(0)
    rows = 12
    given = {DEPTH: rng.random((rows, 1, config.depth_image_size, config.depth_image_size), dtype=np.float32)}
    data = EvalData(image=rng.random((rows, 1, config.image_size, config.image_size), dtype=np.float32),
                    label=np.arange(rows) % 3, audio=None, **{m: given[m] for m in bound})
    prompts = rng.normal(size=(SHAPES.n_classes, config.text_input_dim)).astype(np.float32)
    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", "no-audio", tmp_path / "artifacts")
    registry.client()
    with mlflow.start_run(experiment_id=registry.experiment_id()) as run:
        metrics = tracking.log_evaluation(model, data, prompts, SHAPES.classes)
    client = registry.client()
    names = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert names == {"plots/confusion_image.png", *(f"plots/confusion_{m}.png" for m in bound),
                     "plots/recall_at_k.png", "plots/embedding_map.png"}
    assert not any("audio" in key for key in metrics)
    assert "golden.retrieval_image_to_text_r1" in metrics
    assert all(f"golden.retrieval_{m}_to_text_r1" in metrics for m in bound)
