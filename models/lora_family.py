"""The `lora` family in the lifecycle: caption → class, trained with adapters and served merged.

`models.lora` holds the model (`CaptionClassifier` over the packaged MiniLM) and the peft
wiring; this module is what the lifecycle needs around it: train on the window's labelled
captions and merge, classify captions (with the softmax confidence serving and labelling use),
score per golden row for the gate, and time one caption the way the API serves it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.families import CAPTION_METRIC
from models.lora import (
    CaptionClassifier,
    ClassifierTraining,
    LoraSettings,
    build_lora_classifier,
    count_parameters,
    merge_lora,
    tokenize_captions,
    train_classifier,
)
from models.train import torch_threads

CLASSIFY_BATCH_SIZE = 128  # captions per forward pass; bounds memory, not results


@dataclass(frozen=True)
class CaptionTrainingResult:
    model: CaptionClassifier  # adapters merged: plain MiniLM + head, eval mode, no grad
    losses: list[float]  # cross-entropy of each optimiser step
    trainable_parameters: int  # adapters + head, before merging
    total_parameters: int
    seconds: float


def train_caption_classifier(captions: Sequence[str], labels: np.ndarray, lora: LoraSettings,
                             training: ClassifierTraining, n_classes: int,
                             num_threads: int | None = 1) -> CaptionTrainingResult:
    """Fine-tune adapters and a head of `n_classes` outputs on labelled captions (labels: class indices
    0..n_classes-1, the task's classes in order), then merge the adapters away.

    `num_threads`: torch's intra-op threads while training (restored after; None: leave as is).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(captions) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(captions)} captions")
    outside = np.unique(labels[(labels < 0) | (labels >= n_classes)]).tolist()
    if outside:
        raise ValueError(f"caption labels must be class indices 0..{n_classes - 1} (the task's {n_classes} classes); "
                         f"found {outside} outside that range")
    started = time.perf_counter()
    model = build_lora_classifier(lora, n_classes, seed=training.seed)
    trainable, total = count_parameters(model)
    with torch_threads(num_threads):
        losses = train_classifier(model, tokenize_captions(list(captions)), torch.from_numpy(labels), training)
    return CaptionTrainingResult(merge_lora(model), losses, trainable, total, time.perf_counter() - started)


@torch.no_grad()
def classify_captions(model: CaptionClassifier, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N,) predicted class index and (N, n_classes) softmax of each caption; eval mode, batched."""
    if isinstance(captions, str):
        raise TypeError("classify_captions takes a list of captions, not a single string")
    if not len(captions):
        return np.zeros(0, dtype=np.int64), np.zeros((0, model.head.out_features), dtype=np.float32)
    model.eval()
    probs = []
    for start in range(0, len(captions), CLASSIFY_BATCH_SIZE):
        inputs = tokenize_captions(list(captions[start : start + CLASSIFY_BATCH_SIZE]))
        probs.append(model(**inputs).softmax(dim=-1))
    p = torch.cat(probs).numpy().astype(np.float32)
    return p.argmax(axis=1).astype(np.int64), p


def caption_correct_per_row(model: CaptionClassifier, captions: Sequence[str], labels: np.ndarray) -> dict[str, np.ndarray]:
    """{CAPTION_METRIC: (N,) 1.0 where caption i is classified as labels[i]}: what the gate resamples."""
    predicted, _ = classify_captions(model, captions)
    return {CAPTION_METRIC: (predicted == np.asarray(labels)).astype(np.float64)}


def caption_metrics(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`caption_acc`, `n_eval` and the accuracy per class index k (`per_class_caption_acc_{k}`) of predicted classes."""
    labels = np.asarray(labels)
    correct = (np.asarray(predicted) == labels).astype(np.float64)
    metrics = {CAPTION_METRIC: float(correct.mean()) if len(correct) else float("nan"), "n_eval": float(len(correct))}
    metrics |= {f"per_class_{CAPTION_METRIC}_{k}": float(correct[labels == k].mean()) for k in np.unique(labels)}
    return metrics


def evaluate_caption_classifier(model: CaptionClassifier, captions: Sequence[str], labels: np.ndarray) -> dict[str, float]:
    """Headline and per-class metrics of the lora family on a labelled caption set."""
    return caption_metrics(classify_captions(model, captions)[0], labels)


@torch.no_grad()
def time_one_caption(model: CaptionClassifier, caption: str) -> float:
    """Milliseconds for one caption as the API serves it: tokenize, forward, softmax."""
    started = time.perf_counter()
    model(**tokenize_captions([caption])).softmax(dim=-1)
    return (time.perf_counter() - started) * 1000


def caption_serving_spec(model: CaptionClassifier):
    """The lora family's serving: /classify of text only (the classifier tokenizes the caption itself;
    it has no embedding space to embed into or search)."""
    from models.serving.spec import CLASSIFY, Predictions, ServingSpec, raw_captions, text_as_is

    def predict(modality: str, values: np.ndarray) -> Predictions:
        labels, probs = classify_captions(model, [str(v) for v in values])
        return Predictions(labels, probs)

    return ServingSpec("caption classifier", ("text",), (CLASSIFY,), predict, prepare_text=text_as_is,
                       lake_values=raw_captions, n_classes=int(model.head.out_features))
