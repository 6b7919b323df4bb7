"""The `lora` family's side of the model stages (`train.family: lora`): a caption → class classifier.

`flows.families.lora.LoraFamily` calls these: training on the window's labelled captions, the gate's
scores on the golden set's captions, and the champion's caption votes for labelling. What it trains
and scores lives in `models.lora_family`; this module only wires settings, stores and MLflow around
it, and returns what the imagebind family returns.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from flows.settings import Settings
from flows.stage_config import classifier_training, lora_settings, registry_for
from models.evaluate import CLASS_GROUP, EvalData
from models.families import LORA_FAMILY
from models.family import GoldenScores, TrainOutcome, TrainRequest
from models.inputs import ModelInputs

LOSS_METRIC = "lora.loss"  # cross-entropy per optimiser step
EPOCH_LOSS_METRIC = "lora.epoch_loss"  # its mean over each pass through the labelled captions
MAX_METRICS_PER_REQUEST = 1000  # MLflow's log_batch limit


def golden_captions(golden: EvalData) -> tuple[list[str], np.ndarray]:
    """The golden rows that have a caption: (captions, labels). Every caption row is judged, also
    captions that do not name their class (no model can read those; the thresholds allow for them)."""
    if golden.caption is None:
        raise ValueError("the golden set carries no captions: rebuild it with flows.model_stages.build_golden_set")
    rows = [i for i, caption in enumerate(golden.caption) if caption]
    if not rows:
        raise ValueError("the golden set has no row with a caption: the lora family cannot be evaluated on it")
    return [golden.caption[i] for i in rows], np.asarray(golden.label)[rows]


def _epoch_losses(losses: list[float], steps_per_epoch: int) -> list[tuple[int, float]]:
    """(last step of the epoch, mean loss over its steps) for every epoch, the last one possibly partial."""
    return [(min(start + steps_per_epoch, len(losses)) - 1, float(np.mean(losses[start : start + steps_per_epoch])))
            for start in range(0, len(losses), steps_per_epoch)]


def _log_losses(run_id: str, losses: list[float], steps_per_epoch: int) -> None:
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(LOSS_METRIC, loss, now, step) for step, loss in enumerate(losses)]
    batch += [Metric(EPOCH_LOSS_METRIC, loss, now, step) for step, loss in _epoch_losses(losses, steps_per_epoch)]
    client = mlflow.MlflowClient()
    for start in range(0, len(batch), MAX_METRICS_PER_REQUEST):
        client.log_batch(run_id, metrics=batch[start : start + MAX_METRICS_PER_REQUEST], synchronous=True)


def train_lora(request: TrainRequest) -> TrainOutcome:
    """Train the caption classifier on the window's captions with trusted labels (unlabelled rows are
    skipped), evaluate it on the golden captions, merge the adapters, log run and pyfunc to MLflow. The model
    has one output per class of `settings.task`, and its folder carries `task.json` for serving."""
    import tempfile

    import matplotlib.pyplot as plt
    import mlflow

    from flows.model_stages import build_golden_set, training_window
    from models.artifacts import save_caption_classifier, save_task
    from models.lora_family import caption_metrics, classify_captions, train_caption_classifier
    from models.plots import confusion_matrix_figure
    from models.pyfunc import caption_classifier_flavour
    from models.registry import log_training_run
    from models.tracking import TrainingDataset, start_training_run

    settings, run_name = request.settings, request.run_name
    p, seed, task = settings.params.train.lora, settings.params.train.seed, settings.task
    window = training_window(settings, captions_only=True)
    batches, inputs, label = window.batches, window.inputs, window.label
    labelled = np.flatnonzero(label >= 0)
    if len(labelled) < p.min_labelled_rows:
        raise ValueError(
            f"the training window ({len(batches)} batches, {len(inputs)} captions) has {len(labelled)} captions with a "
            f"trusted label; the lora family needs at least train.lora.min_labelled_rows={p.min_labelled_rows}. Label "
            "more rows (human labels, or the review queue), or lower that minimum in params.yaml")
    captions, targets = [str(c) for c in inputs.caption[labelled]], label[labelled]
    lora, training = lora_settings(p), classifier_training(p, seed)
    registry = registry_for(settings)
    with start_training_run(registry.experiment_id(), run_name, {"flow_run": run_name, "family": LORA_FAMILY}) as run, \
            tempfile.TemporaryDirectory() as tmp:
        result = train_caption_classifier(captions, targets, lora, training, task.n_classes, p.torch_threads)
        _log_losses(run.info.run_id, result.losses, -(-len(targets) // training.batch_size))
        golden, golden_version = build_golden_set(settings)
        golden_text, golden_label = golden_captions(golden)
        predicted, _ = classify_captions(result.model, golden_text)
        metrics = caption_metrics(predicted, golden_label)
        figure = confusion_matrix_figure(golden_label, predicted, task.classes, "Caption classifier, golden set")
        mlflow.log_figure(figure, "plots/confusion_caption.png")
        plt.close(figure)
        model_dir = save_caption_classifier(result.model, Path(tmp) / "classifier")
        save_task(model_dir, task.to_dict())  # serving answers in these classes
        params: dict[str, Any] = {
            "family": LORA_FAMILY, **{f"lora.{k}": v for k, v in asdict(lora).items()},
            **{f"train.{k}": v for k, v in asdict(training).items()}, "train.torch_threads": p.torch_threads,
            "model.trainable_parameters": result.trainable_parameters, "model.total_parameters": result.total_parameters,
            "data.batches": ",".join(batches), "data.rows": len(inputs), "data.labelled": len(labelled),
            "data.golden_excluded": window.golden_excluded}
        logged = log_training_run(
            registry, model_dir, params, [],
            {**(request.label_metrics or {}), **metrics, "train_seconds": result.seconds, "trainable_share": result.trainable_parameters / result.total_parameters},
            {"golden_version": golden_version, "flow_run": run_name, "family": LORA_FAMILY}, run_name,
            dataset=TrainingDataset(list(inputs.sample_id), label, request.data_version), flavour=caption_classifier_flavour())
    headline = {k: v for k, v in metrics.items() if not k.startswith("per_class_")}  # per class: in MLflow only
    return TrainOutcome(logged.run_id, logged.model_uri, headline, batches, len(inputs), len(labelled), result.seconds,
                        golden_version, window.golden_excluded)


def score_lora_family(settings: Settings, models: dict[str, Any], golden: EvalData) -> GoldenScores:
    """The gate's scores of caption classifiers on the golden captions, the slice labels, the rows judged."""
    from models.gate_scoring import class_slice, score_caption_models

    captions, labels = golden_captions(golden)
    scores = score_caption_models(models, captions, labels, settings.params.gate.latency_items)
    return GoldenScores(scores, {CLASS_GROUP: class_slice(labels, settings.task.classes)}, len(labels))


def caption_votes(model, shards: Iterable[ModelInputs]):
    """A lora champion's vote on each row's caption (`champion_text`); rows without one abstain."""
    from features.label import ModelVotes
    from models.lora_family import classify_captions

    sample_ids: list[str] = []
    predicted: list[np.ndarray] = []
    confidence: list[np.ndarray] = []
    for inputs in shards:  # one shard in memory at a time
        sample_ids.extend(inputs.sample_id)
        label, probs = classify_captions(model, [str(c) for c in inputs.caption])
        predicted.append(label)
        confidence.append(np.where(inputs.has_caption, probs.max(axis=1), 0.0))  # no caption: never votes
    return ModelVotes(sample_ids, {"text": np.concatenate(predicted) if predicted else np.zeros(0, np.int64)},
                      {"text": np.concatenate(confidence) if confidence else np.zeros(0)})
