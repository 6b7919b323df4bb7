"""Helpers of the drift-detection quality checks (benchmarks/drift_detection.py and its unit test).

A landing batch is ingested, cleaned and featurised as the lifecycle does (`prepare_window`), a
champion stand-in is trained on the reference window with a given recipe (`train_reference_model`),
and its zero-shot accuracy on the reference is measured (`zero_shot_accuracy`), so prediction drift
judges a model that actually predicts the class, not a barely trained one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.clean import CleanParams, clean_batch
from features.ingest import ingest_batch
from features.transform import compute_sample_features
from models.inputs import InputSpec, ModelInputs, load_clean_inputs


def prepare_window(landing: Path, work: Path, spec: InputSpec,
                   clean: CleanParams) -> tuple[pd.DataFrame, ModelInputs, pd.Series]:
    """Ingest and clean a landing batch under `clean.task`; its features, model inputs and human labels
    (class indices)."""
    raw = ingest_batch(landing, work / "raw")
    cleaned = clean_batch(raw.batch_dir, work / "clean", clean)
    rows = cleaned.rows
    features = compute_sample_features(cleaned.batch_dir, rows, raw.batch_id)
    labels = rows.set_index("sample_id")["label"].dropna().astype(float)
    return features, load_clean_inputs(cleaned.batch_dir, rows, spec), labels


def train_reference_model(inputs: ModelInputs, labels: pd.Series, model_config, train_config):
    """An ImageBind trained on the reference window's complete rows (image <-> caption, audio -> image),
    with `train_config` (a TrainConfig) and `model_config` (an ImageBindConfig; None: its defaults)."""
    from models.imagebind import ImageBindConfig
    from models.text import embed_texts
    from models.train import TrainingData, train_imagebind

    keep = np.flatnonzero(inputs.has_image & inputs.has_audio & inputs.has_caption)
    part = inputs.take(keep)
    label = labels.reindex(part.sample_id).fillna(-1).to_numpy(dtype=np.int64)
    data = TrainingData(image=part.image, audio=part.audio, text_emb=embed_texts(list(part.caption)), label=label)
    return train_imagebind(data, model_config or ImageBindConfig(), train_config).model


def zero_shot_accuracy(model, inputs: ModelInputs, labels: pd.Series, prompt_emb: np.ndarray) -> dict[str, float]:
    """Zero-shot accuracy per modality (image, audio) on the labelled rows that have it."""
    from models.evaluate import predict_zero_shot
    from models.imagebind import AUDIO, VISION

    label = labels.reindex(inputs.sample_id).to_numpy(dtype=np.float64)
    out: dict[str, float] = {}
    for modality, key, present, values in (("image", VISION, inputs.has_image, inputs.image),
                                           ("audio", AUDIO, inputs.has_audio, inputs.audio)):
        rows = np.flatnonzero(present & ~np.isnan(label))
        predicted, _ = predict_zero_shot(model, key, values[rows], prompt_emb)
        out[modality] = round(float(np.mean(predicted == label[rows].astype(np.int64))), 4) if len(rows) else float("nan")
    return out
