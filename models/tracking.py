"""MLflow tracking of a training run: live metrics, system metrics, data input, plots, model signature.

What a user finds on a run (names are stable; see README "Evaluation and tracking"):

- metrics per epoch, logged live at the global optimiser step that ends the epoch:
  `{stage}.loss`, `{stage}.grad_norm`, `image_text.text_logit_scale`, `{stage}.epoch`;
  per step: `{stage}.step_loss`, the loss of every optimiser step (when the logger's
  `record_steps` is passed as `on_step_losses`), and `lr`, the scheduled learning rate
  (`models.train.lr_at`) of every step;
- `system/*` (CPU, memory, disk, network; GPU when one is there) sampled by MLflow while the
  run is open — training included, because the run opens before training starts;
- the training window as a dataset input (`training-window`, context `training`): a frame of
  sample ids whose digest is the lake's data version (`lake/inputs@md5`) when known;
- golden-set evaluation: `models.retrieval` metrics and the plots under `plots/` (a zero-shot confusion
  matrix per modality the golden rows carry, recall@k curves, the embedding map), classes by name.

Every call to MLflow sends its metrics batched (one request per epoch), not one per value.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

from features.transient import retry_transient
from models.evaluate import EvalData, evaluated_modalities, predict_zero_shot
from models.imagebind import VISION, ImageBind, ImageBindConfig
from models.model_card import PLOTS_DIR
from models.plots import confusion_matrix_figure, embedding_map_figure, recall_curves_figure
from models.retrieval import arithmetic_metrics, embed_eval_data, recall_curve, retrieval_metrics
from models.train import STAGE_IMAGE_TEXT, TrainConfig, lr_at

SYSTEM_METRICS_INTERVAL_S = 2.0  # MLflow's default (10 s) gives a 60 s demo training run only ~6 samples
DATASET_NAME = "training-window"
MAX_METRICS_PER_REQUEST = 1000  # MLflow's log_batch limit; an epoch of a large window has more steps
# What DVC sets for the commands it runs (dvc/env.py), as tags: `dvc exp run` names the experiment, so the
# MLflow UI finds the training runs `dvc exp show` lists (search `tags."dvc.exp_name" = '<name>'`).
DVC_RUN_TAGS = {"DVC_EXP_NAME": "dvc.exp_name", "DVC_EXP_BASELINE_REV": "dvc.baseline_rev", "DVC_STAGE": "dvc.stage"}


def config_params(model_config: ImageBindConfig, train_config: TrainConfig, lora: Any = None) -> dict[str, Any]:
    """A training's configuration as flat MLflow params: `model.*`, `train.*`, and `lora.*` for a LoRA fine-tune."""
    params = {**{f"model.{k}": v for k, v in asdict(model_config).items()},
              **{f"train.{k}": v for k, v in asdict(train_config).items()}}
    if lora is not None:
        params.update({f"lora.{k}": v for k, v in asdict(lora).items()})
    return params


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """Optimiser steps of one epoch: `models.train.iterate_batches` drops a trailing batch of one."""
    return rows // batch_size + (1 if rows % batch_size >= 2 else 0)


@dataclass
class EpochLogger:
    """`train_imagebind(on_epoch=...)` callback: one batched MLflow request per epoch."""

    run_id: str
    config: TrainConfig
    rows: int  # training rows, for the step count of an epoch
    pending: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # step losses awaiting their epoch

    def record_steps(self, stage: str, epoch: int, losses: list[float]) -> None:
        """`train_imagebind(on_step_losses=...)`: kept until the epoch's one request sends them."""
        self.pending[(stage, epoch)] = list(losses)

    def global_step(self, stage: str, epoch: int) -> int:
        """Optimiser steps done when `epoch` of `stage` ends, counted across both stages."""
        per_epoch = steps_per_epoch(self.rows, self.config.batch_size)
        offset = 0 if stage == STAGE_IMAGE_TEXT else self.config.epochs_stage1  # stage 2 follows stage 1
        return (offset + epoch + 1) * per_epoch

    def __call__(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        per_epoch = steps_per_epoch(self.rows, self.config.batch_size)
        end = self.global_step(stage, epoch)
        epochs = self.config.epochs_stage1 if stage == STAGE_IMAGE_TEXT else self.config.epochs_stage2
        stage_steps = max(1, per_epoch * epochs)
        now = int(time.time() * 1000)
        batch = [Metric(f"{stage}.{key}", float(value), now, end) for key, value in metrics.items()]
        batch.append(Metric(f"{stage}.epoch", float(epoch), now, end))
        first_in_stage = epoch * per_epoch
        batch.extend(
            Metric("lr", lr_at(first_in_stage + i, stage_steps, self.config.lr, self.config.warmup_fraction,
                               self.config.min_lr_ratio), now, end - per_epoch + i)
            for i in range(per_epoch)
        )
        losses = self.pending.pop((stage, epoch), [])
        batch.extend(Metric(f"{stage}.step_loss", float(v), now, end - len(losses) + i) for i, v in enumerate(losses))
        for start in range(0, len(batch), MAX_METRICS_PER_REQUEST):
            _send_metrics(self.run_id, metrics=batch[start : start + MAX_METRICS_PER_REQUEST], synchronous=True)


@retry_transient("log epoch metrics")
def _send_metrics(run_id: str, metrics: list[Metric], synchronous: bool) -> None:
    """One batched metrics request. A tracking server that restarts mid-training must not end the run, so
    it is retried on transient errors (re-sending metrics of the same step and timestamp is harmless)."""
    mlflow.MlflowClient().log_batch(run_id, metrics=metrics, synchronous=synchronous)


@contextmanager
def start_training_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run with system metrics, open for the whole block (training, evaluation, logging); run by DVC,
    tagged with the DVC experiment and stage (`DVC_RUN_TAGS`)."""
    # The environment variable is where this setting lives: a user's (or a test's) value wins.
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", str(SYSTEM_METRICS_INTERVAL_S))
    tags = {**tags, **{tag: os.environ[name] for name, tag in DVC_RUN_TAGS.items() if os.environ.get(name)}}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags, log_system_metrics=True) as run:
        yield run


def dataset_version_digest(sample_ids: list[str], data_version: str | None) -> str:
    """The lake's md5 from a `path@md5` tag when known, else a digest of the sample ids themselves."""
    if data_version and "@" in data_version:
        return data_version.rsplit("@", 1)[1]
    return hashlib.sha256("\n".join(sample_ids).encode()).hexdigest()[:32]


def log_training_dataset(sample_ids: list[str], label: np.ndarray, data_version: str | None) -> None:
    """The training window (sample ids, label used, -1 unknown) as the run's `training` input."""
    frame = pd.DataFrame({"sample_id": sample_ids, "label": np.asarray(label, dtype=np.int64)})
    dataset = mlflow.data.from_pandas(frame, name=DATASET_NAME, targets="label",
                                      digest=dataset_version_digest(sample_ids, data_version))
    tags = {"data_version": data_version} if data_version else None
    mlflow.log_input(dataset, context="training", tags=tags)


def log_evaluation(model: ImageBind, data: EvalData, prompt_emb: np.ndarray, class_names: Sequence[str] | None = None,
                   prefix: str = "golden") -> dict[str, float]:
    """Retrieval and arithmetic metrics (`{prefix}.…`) and the plots; returns the metrics logged.

    One zero-shot confusion plot for images and one per bound modality the rows carry and the model
    embeds (`confusion_{m}.png`); `class_names[k]` names class k on the plots (None: the indices stand in).
    """
    import matplotlib.pyplot as plt

    names = tuple(str(k) for k in range(len(prompt_emb))) if class_names is None else tuple(class_names)
    if len(names) != len(prompt_emb):
        raise ValueError(f"{len(names)} class names for {len(prompt_emb)} class prompts; give one name per class")
    joint = embed_eval_data(model, data, prompt_emb)
    curves = {f"{query}→{gallery}": recall_curve(joint, query, gallery) for query, gallery in joint.pairs()}
    metrics = {f"{prefix}.{k}": v for k, v in {**retrieval_metrics(joint), **arithmetic_metrics(joint)}.items()}
    mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    given = {"image": (VISION, data.image), **{m: (m, data.bound()[m]) for m in evaluated_modalities(model, data)}}
    figures = {
        f"confusion_{name}.png": confusion_matrix_figure(
            data.label, predict_zero_shot(model, modality, values, prompt_emb)[0], names,
            f"Zero-shot {name}→text, {prefix} set")
        for name, (modality, values) in given.items()
    }
    figures["recall_at_k.png"] = recall_curves_figure(curves, f"Retrieval by class, {prefix} set")
    figures["embedding_map.png"] = embedding_map_figure(
        {name: emb.numpy() for name, emb in joint.embedding.items()}, joint.label, names,
        f"Joint embedding (PCA), {prefix} set")
    for filename, figure in figures.items():
        mlflow.log_figure(figure, f"{PLOTS_DIR}/{filename}")
        plt.close(figure)
    return metrics


def pyfunc_signature() -> ModelSignature:
    """`models.pyfunc.ImageBindPyfunc`: any of text / image_path / audio_path in, one embedding column per modality out."""
    inputs = Schema([ColSpec("string", name, required=False) for name in ("text", "image_path", "audio_path")])
    outputs = Schema([ColSpec(Array("float"), f"{m}_embedding", required=False) for m in ("text", "vision", "audio")])
    return ModelSignature(inputs=inputs, outputs=outputs)


PYFUNC_INPUT_EXAMPLE = pd.DataFrame({"text": ["an example caption"]})  # needs no file on the loader's disk


@dataclass(frozen=True)
class RunEvaluation:
    """What `log_evaluation` needs: the trained model, a labelled held-out set, the class prompts and names."""

    model: ImageBind
    data: EvalData
    prompt_emb: np.ndarray  # (n_classes, text_input_dim) frozen-encoder prompt embeddings
    class_names: tuple[str, ...]  # the task's classes: class_names[k] names row k of prompt_emb on the plots


@dataclass(frozen=True)
class TrainingDataset:
    """The rows a model trained on, for `log_training_dataset`."""

    sample_ids: list[str]
    label: np.ndarray  # (N,) label used in training, -1 unknown
    data_version: str | None = None  # lake tag `path@md5`; None: the sample ids' digest stands in
