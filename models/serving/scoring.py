"""What the served model computes for one item or a whole batch: embedding, zero-shot class, search.

Pure functions of a loaded model and arrays; `ServedModel` is immutable, so a request that took
one keeps using it even after the holder swapped in a newer version. A served version answers in
the classes of the task it was trained for (its `task.json`), by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from features.task import Task
from models.evaluate import embed_modality
from models.imagebind import AUDIO, DEPTH, IMU, TEXT, THERMAL, VISION, ImageBind
from models.inputs import ModelInputs
from models.serving.spec import (
    CLASSIFY,
    EMBED,
    SEARCH,
    Predictions,
    SearchIndex,
    ServingSpec,
    lake_values,
    present_rows,
)

# API modality names → the model's modality keys (one table, no branches).
MODALITY_KEYS: dict[str, str] = {"image": VISION, "audio": AUDIO, "text": TEXT, "depth": DEPTH, "thermal": THERMAL,
                                 "imu": IMU}
EMBEDDING_HEAD_DIMS = 8  # leading embedding dimensions copied into the inference log for drift checks


@dataclass(frozen=True)
class ServedModel:
    name: str  # registered model name
    version: str  # registered model version
    model: Any  # the family's loaded model (the registered version's `.model`)
    spec: dict[str, Any]  # input_spec.json: image_size, image_channels, n_mels, audio_frames, sample_rate, ...
    task: Task  # the classes and prompts this version was trained for (its task.json)
    serving: ServingSpec  # what its family serves: modalities, endpoints, predict, search index
    loaded_at: float  # unix time the version finished loading
    family: str = ""  # the family's name (GET /model)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The API modalities this version takes."""
        return self.serving.modalities

    def refusal(self, endpoint: str, modality: str) -> str | None:
        """Why this model cannot answer `endpoint` for `modality` (the API's 422), or None."""
        return self.serving.refusal(f"{self.name} v{self.version}", endpoint, modality)


@dataclass(frozen=True)
class Scored:
    embedding: np.ndarray  # (D,) unit
    raw_norm: float  # norm before normalisation (the postprocessor's logit scale for a healthy model)
    label: int  # zero-shot class index into the task's classes
    confidence: float  # its softmax probability
    probs: np.ndarray  # (K,) over the task's classes


@torch.no_grad()
def embed_rows(model: ImageBind, modality: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, ...) inputs → (N, D) unit embeddings and the (N,) norms before normalisation."""
    model.eval()
    raw = model({MODALITY_KEYS[modality]: torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))})
    raw = raw[MODALITY_KEYS[modality]]
    return F.normalize(raw, dim=-1).numpy(), raw.norm(dim=-1).numpy()


def zero_shot(embeddings: np.ndarray, prompt_emb: np.ndarray, text_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) unit embeddings → (N,) class and (N, K) softmax over the prompts, as `predict_zero_shot` scores."""
    logits = torch.from_numpy(text_scale * embeddings @ prompt_emb.T)
    probs = logits.softmax(dim=-1).numpy()
    return probs.argmax(axis=1), probs


def score_item(served: ServedModel, modality: str, values: np.ndarray) -> Scored:
    """One prepared item → its class (and, for a model with an embedding space, its embedding)."""
    p = served.serving.predict(modality, values[None])
    label = int(p.labels[0])
    embedding = p.embeddings[0] if p.embeddings is not None else np.zeros(0, np.float32)
    norm = float(p.norms[0]) if p.norms is not None else float("nan")
    return Scored(embedding, norm, label, float(p.probs[0, label]), p.probs[0])


def search(index: SearchIndex, embedding: np.ndarray, target: str, k: int) -> list[dict[str, Any]]:
    """The k indexed `target` items nearest to a unit embedding, by cosine similarity."""
    if target not in index.embeddings or not len(index.embeddings[target]):
        return []
    scores = index.embeddings[target] @ embedding
    top = np.argsort(-scores, kind="stable")[:k]
    return [{"sample_id": str(index.sample_ids[target][i]), "batch_id": str(index.batch_ids[target][i]),
             "score": round(float(scores[i]), 6)} for i in top]


def build_prompt_embeddings(model: ImageBind, prompt_minilm: np.ndarray) -> np.ndarray:
    """(K, 384) MiniLM embeddings of the class prompts → (K, D) unit embeddings in the model's space."""
    return embed_modality(model, TEXT, prompt_minilm).numpy()


def build_search_index(model: ImageBind, batches: Iterable[tuple[str, ModelInputs]]) -> SearchIndex:
    """Embed every present item of each modality the model takes, over the given (batch_id, inputs) parts."""
    modalities = [m for m, key in MODALITY_KEYS.items() if key in model.config.modalities]
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {m: [] for m in modalities}
    for batch_id, inputs in batches:
        for modality in modalities:
            rows = present_rows(inputs, modality)
            if not len(rows):
                continue
            values = lake_values(inputs, modality, rows)
            embedded = embed_modality(model, MODALITY_KEYS[modality], values).numpy()
            parts[modality].append((embedded, inputs.sample_id[rows], np.full(len(rows), batch_id)))
    return SearchIndex(
        embeddings={m: np.concatenate([p[0] for p in ps]).astype(np.float32) for m, ps in parts.items() if ps},
        sample_ids={m: np.concatenate([p[1] for p in ps]).astype(str) for m, ps in parts.items() if ps},
        batch_ids={m: np.concatenate([p[2] for p in ps]).astype(str) for m, ps in parts.items() if ps},
    )


def imagebind_serving_spec(model: ImageBind, task: Task, lake: Callable[[], Iterable[tuple[str, ModelInputs]]]
                           ) -> ServingSpec:
    """The imagebind family's serving: embed, zero-shot classify (the task's prompts through this model's text
    tower, at its learned temperature) and search, for every modality it has a tower for."""
    from models.text import encode_class_prompts

    model.eval()
    prompt_emb = build_prompt_embeddings(model, encode_class_prompts(task.prompts))
    text_scale = model.logit_scale(TEXT)

    def predict(modality: str, values: np.ndarray) -> Predictions:
        embeddings, norms = embed_rows(model, modality, values)
        labels, probs = zero_shot(embeddings, prompt_emb, text_scale)
        return Predictions(labels, probs, embeddings, norms)

    return ServingSpec("multimodal embedding model",
                       tuple(m for m, key in MODALITY_KEYS.items() if key in model.config.modalities),
                       (EMBED, CLASSIFY, SEARCH), predict, index=build_search_index(model, lake()),
                       embed_dim=int(prompt_emb.shape[1]))


def embedding_summary(embedding: np.ndarray, raw_norm: float) -> dict[str, Any]:
    """What the inference log keeps of an embedding: its norm, leading dimensions and a content hash."""
    return {
        "embedding_norm": round(raw_norm, 5),
        "embedding_head": [round(float(x), 5) for x in embedding[:EMBEDDING_HEAD_DIMS]],
        "embedding_sha1": hashlib.sha1(embedding.astype(np.float16).tobytes()).hexdigest()[:16],
    }


def prediction_fields(task: Task, label: int, confidence: float) -> dict[str, Any]:
    """What the inference log keeps of a zero-shot answer: the class index (what monitoring compares),
    its name and the prompt it matched, and the confidence."""
    return {"prediction": label, "prediction_class": task.name_of(label), "prediction_prompt": task.prompt_of(label),
            "confidence": round(confidence, 5)}
