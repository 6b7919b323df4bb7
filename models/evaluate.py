"""Zero-shot and cross-modal retrieval metrics for a trained ImageBind.

The headline number is `zero_shot_audio_acc`: audio classified by its nearest class prompt,
although no (audio, text) pair was ever trained on — ImageBind's emergent alignment.
Slices (per class, per voice) show where it fails, e.g. one accent the audio tower never heard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.imagebind import AUDIO, TEXT, VISION, ImageBind

# One English prompt per class id 0–9, worded differently from training captions on purpose.
DIGIT_PROMPTS: tuple[str, ...] = tuple(
    f"a handwritten digit {word}"
    for word in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
)
EVAL_BATCH_SIZE = 256  # rows per forward pass; bounds memory, not results


@dataclass
class EvalData:
    """Held-out rows: image i and audio clip i both show/say class label[i]."""

    image: np.ndarray  # (N, 1, S, S) float32 in [0, 1]
    audio: np.ndarray  # (N, T, M) float32 log-mel
    label: np.ndarray  # (N,) int64, every label known
    voice: list[str] | None = None  # (N,) speaker of each audio clip, for per-voice slices
    caption: list[str] | None = None  # (N,) caption of each row ("" when none), for the lora family

    def validate(self) -> None:
        """Raise ValueError naming the bad array when lengths disagree or a label is unknown."""
        n = len(self.label)
        if self.label.ndim != 1:
            raise ValueError(f"label must be 1-D (N,), got shape {self.label.shape}")
        if n and self.label.min() < 0:
            raise ValueError(f"evaluation labels must all be known (≥ 0), found {int(self.label.min())}")
        for name in ("image", "audio"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} rows but label has {n}")
        for name in ("voice", "caption"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries but label has {n}")


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


def _predictions(model: ImageBind, data: EvalData, prompt_emb: np.ndarray) -> dict[str, np.ndarray]:
    """Predicted class per row for each task: image→prompt, audio→prompt, audio→nearest image."""
    data.validate()
    if prompt_emb.ndim != 2 or prompt_emb.shape[1] != model.config.text_input_dim:
        raise ValueError(
            f"prompt_emb must be (n_classes, {model.config.text_input_dim}), got shape {prompt_emb.shape}"
        )
    prompts = embed_modality(model, TEXT, prompt_emb)  # (K, D)
    images = embed_modality(model, VISION, data.image)  # (N, D)
    audio = embed_modality(model, AUDIO, data.audio)  # (N, D)
    nearest_image = (audio @ images.T).argmax(dim=1).numpy()  # (N,)
    return {
        "image": (images @ prompts.T).argmax(dim=1).numpy(),
        "audio": (audio @ prompts.T).argmax(dim=1).numpy(),
        "audio_to_image": data.label[nearest_image],
    }


def _accuracy(predicted: np.ndarray, label: np.ndarray) -> float:
    return float(np.mean(predicted == label)) if len(label) else float("nan")


def evaluate_model(model: ImageBind, data: EvalData, prompt_emb: np.ndarray) -> dict[str, float]:
    """Headline metrics; prompt_emb row k is the frozen-encoder embedding of class k's prompt.

    - zero_shot_image_acc: image's nearest prompt is its class (trained directly, stage 1)
    - zero_shot_audio_acc: audio's nearest prompt is its class (emergent, never trained)
    - audio_to_image_r1: audio's nearest held-out image shares its class (stage 2)
    """
    predicted = _predictions(model, data, prompt_emb)
    return {
        "zero_shot_image_acc": _accuracy(predicted["image"], data.label),
        "zero_shot_audio_acc": _accuracy(predicted["audio"], data.label),
        "audio_to_image_r1": _accuracy(predicted["audio_to_image"], data.label),
        "n_eval": float(len(data.label)),
    }


def correct_per_row(model: ImageBind, data: EvalData, prompt_emb: np.ndarray) -> dict[str, np.ndarray]:
    """Per headline metric, (N,) 1.0 where row i is right, else 0.0: the mean is `evaluate_model`'s
    value; the gate resamples these rows to put an interval on a change."""
    predicted = _predictions(model, data, prompt_emb)
    return {
        "zero_shot_image_acc": (predicted["image"] == data.label).astype(np.float64),
        "zero_shot_audio_acc": (predicted["audio"] == data.label).astype(np.float64),
        "audio_to_image_r1": (predicted["audio_to_image"] == data.label).astype(np.float64),
    }


def evaluate_slices(model: ImageBind, data: EvalData, prompt_emb: np.ndarray) -> dict[str, float]:
    """Accuracy per class (`per_class_{image|audio}_acc_{k}`) and per voice (`per_voice_audio_acc_{v}`)."""
    predicted = _predictions(model, data, prompt_emb)
    slices: dict[str, float] = {}
    for k in np.unique(data.label):
        rows = data.label == k
        slices[f"per_class_image_acc_{k}"] = _accuracy(predicted["image"][rows], data.label[rows])
        slices[f"per_class_audio_acc_{k}"] = _accuracy(predicted["audio"][rows], data.label[rows])
    if data.voice is not None:
        voices = np.asarray(data.voice)
        for voice in sorted(set(data.voice)):
            rows = voices == voice
            slices[f"per_voice_audio_acc_{voice}"] = _accuracy(predicted["audio"][rows], data.label[rows])
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
