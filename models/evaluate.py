"""Zero-shot and cross-modal retrieval metrics for a trained ImageBind, for the modalities the data has.

Every task scores `zero_shot_image_acc` (images against the class prompts, trained directly). Each
other modality m the evaluation rows carry (audio, depth, thermal, imu) adds `zero_shot_{m}_acc`:
m classified by its nearest class prompt although no (m, text) pair was ever trained on, ImageBind's
emergent alignment; and `{m}_to_image_r1`: m's nearest held-out image shares its class. Slices (per
class, per value of each of the task's slice fields) show where a model fails.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.families import IMAGE_METRIC, to_image_metric, zero_shot_metric
from models.imagebind import BOUND_MODALITIES, TEXT, VISION, ImageBind

EVAL_BATCH_SIZE = 256  # rows per forward pass; bounds memory, not results
CLASS_GROUP = "class"  # the slice every evaluation has: the row's class index


@dataclass
class EvalData:
    """Held-out rows, every label known: image i (and clip, map or series i, when given) shows class label[i]."""

    image: np.ndarray  # (N, C, S, S) float32 in [0, 1]
    label: np.ndarray  # (N,) int64 class index, every label known
    caption: list[str] | None = None  # (N,) caption of each row ("" when none), for the lora family
    groups: dict[str, list[str]] = field(default_factory=dict)  # slice field → (N,) value per row ("" unknown)
    _: KW_ONLY
    audio: np.ndarray | None = None  # (N, T, M) float32 log-mel
    depth: np.ndarray | None = None  # (N, 1, Sd, Sd) float32 maps
    thermal: np.ndarray | None = None  # (N, 1, St, St) float32 maps
    imu: np.ndarray | None = None  # (N, 6, L) float32 series

    def bound(self) -> dict[str, np.ndarray]:
        """The modalities given besides images (and the prompts' text), in training order."""
        return {m: getattr(self, m) for m in BOUND_MODALITIES if getattr(self, m) is not None}

    def validate(self) -> None:
        """Raise ValueError naming the bad array when lengths disagree or a label is unknown."""
        n = len(self.label)
        if self.label.ndim != 1:
            raise ValueError(f"label must be 1-D (N,), got shape {self.label.shape}")
        if n and self.label.min() < 0:
            raise ValueError(f"evaluation labels must all be known (≥ 0), found {int(self.label.min())}")
        for name, values in {"image": self.image, **self.bound()}.items():
            if values.shape[0] != n:
                raise ValueError(f"{name} has {values.shape[0]} rows but label has {n}")
        if self.caption is not None and len(self.caption) != n:
            raise ValueError(f"caption has {len(self.caption)} entries but label has {n}")
        if CLASS_GROUP in self.groups:
            raise ValueError(f"groups: the {CLASS_GROUP!r} slice always exists (from label); give metadata fields only")
        for name, values in self.groups.items():
            if len(values) != n:
                raise ValueError(f"groups[{name!r}] has {len(values)} entries but label has {n}")


def eval_data_from_inputs(inputs: Any, labels: np.ndarray, groups: dict[str, list[str]] | None = None) -> EvalData:
    """Golden rows (`models.inputs.ModelInputs`) with their class indices and slice values as `EvalData`,
    with each modality the rows carry. A modality some rows carry and others lack is refused: every
    metric is a mean over all golden rows, and the gate compares models row by row."""
    from models.inputs import KIND_MODALITY

    n = len(inputs)
    given: dict[str, np.ndarray] = {}
    for kind in ("image", *BOUND_MODALITIES):
        mask = getattr(inputs, f"has_{kind}")
        if kind != "image" and not mask.any():
            continue
        if not mask.all():
            lacking = [str(s) for s in inputs.sample_id[~mask][:3]]
            raise ValueError(f"{int((~mask).sum())} of {n} evaluation rows lack {kind} (e.g. {lacking}) while "
                             f"{'the model needs it' if kind == 'image' else 'others carry it'}: give every golden "
                             f"row each {KIND_MODALITY[kind]} input the set has")
        given[kind] = getattr(inputs, kind)
    return EvalData(image=given.pop("image"), label=np.asarray(labels, dtype=np.int64),
                    caption=[str(c) for c in inputs.caption], groups=dict(groups or {}), **given)


@torch.no_grad()
def embed_modality(model: ImageBind, modality: str, values: np.ndarray) -> Tensor:
    """(N, ...) inputs → (N, D) unit-norm embeddings, in batches, with the model in eval mode."""
    model.eval()
    chunks = []
    for start in range(0, len(values), EVAL_BATCH_SIZE):
        batch = np.ascontiguousarray(values[start : start + EVAL_BATCH_SIZE], dtype=np.float32)
        chunks.append(model({modality: torch.from_numpy(batch)})[modality])
    if not chunks:
        return torch.zeros(0, model.config.embed_dim)
    # Postprocessors scale by logit scales; cosine rankings need the direction only.
    return F.normalize(torch.cat(chunks), dim=-1)


def evaluated_modalities(model: ImageBind, data: EvalData) -> tuple[str, ...]:
    """The bound modalities scored: those the rows carry and the model embeds."""
    return tuple(m for m in data.bound() if m in model.config.modalities)


def _predictions(model: ImageBind, data: EvalData, prompt_emb: np.ndarray) -> dict[str, np.ndarray]:
    """Predicted class per row, per headline metric: image→prompt, and per bound modality m,
    m→prompt (`zero_shot_{m}_acc`) and the class of m's nearest image (`{m}_to_image_r1`)."""
    data.validate()
    if prompt_emb.ndim != 2 or prompt_emb.shape[1] != model.config.text_input_dim:
        raise ValueError(
            f"prompt_emb must be (n_classes, {model.config.text_input_dim}), got shape {prompt_emb.shape}"
        )
    prompts = embed_modality(model, TEXT, prompt_emb)  # (K, D)
    images = embed_modality(model, VISION, data.image)  # (N, D)
    predicted = {IMAGE_METRIC: (images @ prompts.T).argmax(dim=1).numpy()}
    for modality in evaluated_modalities(model, data):
        embedded = embed_modality(model, modality, data.bound()[modality])  # (N, D)
        predicted[zero_shot_metric(modality)] = (embedded @ prompts.T).argmax(dim=1).numpy()
        predicted[to_image_metric(modality)] = data.label[(embedded @ images.T).argmax(dim=1).numpy()]
    return predicted


def _accuracy(predicted: np.ndarray, label: np.ndarray) -> float:
    return float(np.mean(predicted == label)) if len(label) else float("nan")


def evaluate_model(model: ImageBind, data: EvalData, prompt_emb: np.ndarray) -> dict[str, float]:
    """Headline metrics (see the module docstring) and `n_eval`; prompt_emb row k is the
    frozen-encoder embedding of class k's prompts (`models.text.encode_class_prompts`)."""
    predicted = _predictions(model, data, prompt_emb)
    return {**{name: _accuracy(p, data.label) for name, p in predicted.items()}, "n_eval": float(len(data.label))}


def correct_per_row(model: ImageBind, data: EvalData, prompt_emb: np.ndarray) -> dict[str, np.ndarray]:
    """Per headline metric, (N,) 1.0 where row i is right, else 0.0: the mean is `evaluate_model`'s
    value; the gate resamples these rows to put an interval on a change."""
    predicted = _predictions(model, data, prompt_emb)
    return {name: (p == data.label).astype(np.float64) for name, p in predicted.items()}


def evaluate_slices(model: ImageBind, data: EvalData, prompt_emb: np.ndarray) -> dict[str, float]:
    """Zero-shot accuracy of images and of each bound modality per class (`per_class_{m}_acc_{k}`,
    k the class index) and per value of each slice field (`per_{field}_{m}_acc_{value}`)."""
    predicted = _predictions(model, data, prompt_emb)
    zero_shot = {"image": predicted[IMAGE_METRIC],
                 **{m: predicted[zero_shot_metric(m)] for m in evaluated_modalities(model, data)}}
    columns = {CLASS_GROUP: data.label, **{f: np.asarray(v, dtype=str) for f, v in data.groups.items()}}
    slices: dict[str, float] = {}
    for group, column in columns.items():
        for value in sorted(set(column.tolist()), key=str):
            rows = column == value
            for modality, p in zero_shot.items():
                slices[f"per_{group}_{modality}_acc_{value}"] = _accuracy(p[rows], data.label[rows])
    return slices


@torch.no_grad()
def predict_zero_shot(model: ImageBind, modality: str, values: np.ndarray, prompt_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot class and its softmax confidence per row: `modality` inputs against the class prompts.

    Used as a labelling function (the champion votes on new data); the softmax uses the
    text tower's learned temperature, the one image↔text training calibrated.
    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    embeddings = embed_modality(model, modality, values)  # (N, D)
    prompts = embed_modality(model, TEXT, prompt_emb)  # (K, D)
    probs = (model.logit_scale(TEXT) * embeddings @ prompts.T).softmax(dim=-1)
    confidence, predicted = probs.max(dim=-1)
    return predicted.numpy().astype(np.int64), confidence.numpy().astype(np.float32)
