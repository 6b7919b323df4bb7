"""What the champion makes of a window of data: its embeddings, zero-shot classes and their correctness.

Turns a window's feature table, model inputs and known labels into `MonitorData` for the checks.
Values in, values out: the caller loads the model and the data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.evaluate import embed_modality
from models.imagebind import AUDIO, DEPTH, IMU, TEXT, THERMAL, VISION, ImageBind
from models.inputs import ModelInputs
from monitoring.checks import MonitorData

# Monitored input kind (a ModelInputs field) -> the model's modality key; text is the prompts' side.
MODALITY_KEYS: dict[str, str] = {"image": VISION, "audio": AUDIO, "depth": DEPTH, "thermal": THERMAL, "imu": IMU}


def monitored_modalities(model: ImageBind) -> tuple[str, ...]:
    """The input kinds the model embeds (besides text), in MODALITY_KEYS order."""
    return tuple(kind for kind, key in MODALITY_KEYS.items() if key in model.config.modalities)


def build_monitor_data(features: pd.DataFrame | None, inputs: ModelInputs | None, model: ImageBind,
                       prompt_emb: np.ndarray, labels: pd.Series | None = None,
                       modalities: tuple[str, ...] | None = None) -> MonitorData:
    """Embeddings and zero-shot classes of every present input of each modality the model has (or of
    `modalities`); `labels` (sample_id -> class index, human labels only) give per-row correctness."""
    modalities = monitored_modalities(model) if modalities is None else modalities
    unknown = [m for m in modalities if m not in MODALITY_KEYS or MODALITY_KEYS[m] not in model.config.modalities]
    if unknown:
        raise ValueError(f"modalities {unknown} are not the model's; it embeds {list(monitored_modalities(model))}")
    data = MonitorData(features=features)
    if inputs is None or len(inputs) == 0:
        return data
    prompts = embed_modality(model, TEXT, prompt_emb).numpy()  # (K, D)
    known = labels.dropna() if labels is not None else pd.Series(dtype="int64")
    for modality in modalities:
        rows = np.flatnonzero(getattr(inputs, f"has_{modality}"))
        values = getattr(inputs, modality)[rows]
        embedded = embed_modality(model, MODALITY_KEYS[modality], values).numpy()  # (N, D)
        predicted = (embedded @ prompts.T).argmax(axis=1) if len(rows) else np.zeros(0, np.int64)
        data.embeddings[modality], data.predictions[modality] = embedded, predicted
        label = known.reindex(inputs.sample_id[rows]).to_numpy(dtype=float)
        has_label = ~np.isnan(label)
        data.correct[modality] = (predicted[has_label] == label[has_label]).astype(np.float64)
    return data


def build_caption_monitor_data(features: pd.DataFrame | None, inputs: ModelInputs | None, classify,
                               labels: pd.Series | None = None) -> MonitorData:
    """A lora-family champion's view of a window: its caption classes (`text`) and their correctness
    where labels are known; it has no embeddings. `classify(captions) -> (N,) classes`."""
    data = MonitorData(features=features)
    if inputs is None or len(inputs) == 0:
        return data
    rows = np.flatnonzero(inputs.has_caption)
    predicted = np.asarray(classify([str(c) for c in inputs.caption[rows]]), dtype=np.int64)
    data.predictions["text"] = predicted
    known = labels.dropna() if labels is not None else pd.Series(dtype="int64")
    label = known.reindex(inputs.sample_id[rows]).to_numpy(dtype=float)
    has_label = ~np.isnan(label)
    data.correct["text"] = (predicted[has_label] == label[has_label]).astype(np.float64)
    return data
