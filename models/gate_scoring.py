"""What the gate measures on the golden set: per-row scores, p95 latency per item, model size.

Latency is measured for all compared models in the same process, item by item and interleaved
(challenger, champion, champion, challenger, …), so a busy neighbour on a shared machine slows
both alike instead of whichever happened to run second.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from models.evaluate import CLASS_GROUP, EvalData, correct_per_row, evaluated_modalities
from models.families import IMAGEBIND_BOUND, to_image_metric, zero_shot_metric
from models.gate import ModelScores
from models.imagebind import VISION, ImageBind

# One golden item through the model, batch of 1 (ImageBind: the image and each other modality it has; lora: a caption)
LATENCY_METRIC = "p95_latency_ms"
SIZE_METRIC = "model_size_mb"  # parameter and buffer bytes / 1e6: what the logged weights.pt holds
WARMUP_ITEMS = 3  # first calls allocate and pick kernels; not what a warm server sees


def model_megabytes(model: torch.nn.Module) -> float:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


@torch.no_grad()
def measure_p95_latency_ms(models: dict[str, ImageBind], golden: EvalData, items: int) -> dict[str, float]:
    """p95 over `items` golden rows of the wall time of one row's forward pass (its image and each other
    modality the row carries and the model embeds), per model."""
    if items < 1:
        raise ValueError(f"latency needs at least one item, got {items}")
    names = list(models)
    for model in models.values():
        model.eval()
    timings: dict[str, list[float]] = {name: [] for name in names}
    n = len(golden.label)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one item is tiny work; with 2 threads OpenMP stalls whenever a neighbour holds a core
    try:
        for i in range(WARMUP_ITEMS + items):
            row = i % n
            item = {VISION: golden.image[row : row + 1], **{m: v[row : row + 1] for m, v in golden.bound().items()}}
            item = {m: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for m, v in item.items()}
            for name in names if i % 2 == 0 else reversed(names):  # alternate who goes first
                batch = {m: item[m] for m in (VISION, *evaluated_modalities(models[name], golden))}
                started = time.perf_counter()
                models[name](batch)
                if i >= WARMUP_ITEMS:
                    timings[name].append((time.perf_counter() - started) * 1000)
    finally:
        torch.set_num_threads(threads)
    return {name: float(np.percentile(values, 95)) for name, values in timings.items()}


def score_models(models: dict[str, ImageBind], golden: EvalData, prompt_emb: np.ndarray,
                 latency_items: int) -> dict[str, ModelScores]:
    """Every model on the same golden rows: per-row correctness, p95 latency (measured together), size,
    and the metrics that do not apply because the golden set lacks their modality."""
    latency = measure_p95_latency_ms(models, golden, latency_items)
    absent = not_applicable_metrics(golden)
    return {name: ModelScores(correct_per_row(model, golden, prompt_emb),
                              {LATENCY_METRIC: latency[name], SIZE_METRIC: model_megabytes(model)}, absent)
            for name, model in models.items()}


def not_applicable_metrics(golden: EvalData) -> dict[str, str]:
    """metric → why it does not apply: the metrics of each modality the golden set (so the task) lacks."""
    given = golden.bound()
    return {name(m): f"the golden set has no {m}" for m in IMAGEBIND_BOUND if m not in given
            for name in (zero_shot_metric, to_image_metric)}


def class_slice(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """(N,) class indices → (N,) class names: the class slice's values (`class=circle` in the decision, the
    registry and the CLI)."""
    names, labels = np.asarray(class_names, dtype=str), np.asarray(labels, dtype=np.int64)
    if len(labels) and int(labels.max()) >= len(names):
        raise ValueError(f"golden label {int(labels.max())} has no class name; the task names {len(names)} classes")
    return names[labels]


def golden_groups(golden: EvalData, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Slice labels of the golden rows: the class by name, and each of the task's slice fields."""
    return {CLASS_GROUP: class_slice(golden.label, class_names),
            **{f: np.asarray(v, dtype=str) for f, v in golden.groups.items()}}


# --- the lora family: caption classification on the golden set's captions -------------------------


@torch.no_grad()
def measure_caption_p95_latency_ms(models: dict[str, torch.nn.Module], captions: list[str], items: int) -> dict[str, float]:
    """p95 over `items` golden captions of one caption's tokenize + forward, per model, interleaved."""
    from models.lora_family import time_one_caption

    if items < 1 or not captions:
        raise ValueError(f"latency needs at least one item and one caption, got {items} items, {len(captions)} captions")
    names = list(models)
    timings: dict[str, list[float]] = {name: [] for name in names}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as for ImageBind: one small item, a busy neighbour stalls a second thread
    try:
        for i in range(WARMUP_ITEMS + items):
            for name in names if i % 2 == 0 else reversed(names):
                elapsed = time_one_caption(models[name].eval(), captions[i % len(captions)])
                if i >= WARMUP_ITEMS:
                    timings[name].append(elapsed)
    finally:
        torch.set_num_threads(threads)
    return {name: float(np.percentile(values, 95)) for name, values in timings.items()}


def score_caption_models(models: dict[str, torch.nn.Module], captions: list[str], labels: np.ndarray,
                         latency_items: int) -> dict[str, ModelScores]:
    """Every caption classifier on the same golden captions: per-row correctness, p95 latency, size."""
    from models.lora_family import caption_correct_per_row

    latency = measure_caption_p95_latency_ms(models, captions, latency_items)
    return {name: ModelScores(caption_correct_per_row(model, captions, labels),
                              {LATENCY_METRIC: latency[name], SIZE_METRIC: model_megabytes(model)})
            for name, model in models.items()}
