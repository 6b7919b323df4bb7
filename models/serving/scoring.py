"""What the served model computes for one item or a whole batch: embedding, zero-shot class, search.

Pure functions of a loaded model and arrays; `ServedModel` is immutable, so a request that took
one keeps using it even after the holder swapped in a newer version. A served version answers in
the classes of the task it was trained for (its `task.json`), by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from features.task import Task
from models.evaluate import embed_modality
from models.families import IMAGEBIND_FAMILY, LORA_FAMILY
from models.imagebind import AUDIO, DEPTH, IMU, TEXT, THERMAL, VISION, ImageBind
from models.inputs import ModelInputs

# API modality names → the model's modality keys (one table, no branches).
MODALITY_KEYS: dict[str, str] = {"image": VISION, "audio": AUDIO, "text": TEXT, "depth": DEPTH, "thermal": THERMAL,
                                 "imu": IMU}
INPUT_FIELDS: dict[str, str] = {"image": "image", "audio": "audio", "text": "caption", "depth": "depth",
                                "thermal": "thermal", "imu": "imu"}  # API modality → its ModelInputs field
CAPTION_MODALITIES = ("text",)  # what a lora-family caption classifier takes
EMBEDDING_HEAD_DIMS = 8  # leading embedding dimensions copied into the inference log for drift checks


@dataclass(frozen=True)
class SearchIndex:
    """Unit embeddings of the ingested items per target modality, with their sample and batch ids."""

    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # modality → (N, D) float32
    sample_ids: dict[str, np.ndarray] = field(default_factory=dict)  # modality → (N,) str
    batch_ids: dict[str, np.ndarray] = field(default_factory=dict)  # modality → (N,) str

    def counts(self) -> dict[str, int]:
        return {m: int(len(ids)) for m, ids in self.sample_ids.items()}


@dataclass(frozen=True)
class ServedModel:
    name: str  # registered model name
    version: str  # registered model version
    model: ImageBind  # or, for the lora family, its merged CaptionClassifier
    spec: dict[str, Any]  # input_spec.json: image_size, image_channels, n_mels, audio_frames, sample_rate, ...
    task: Task  # the classes and prompts this version was trained for (its task.json)
    prompt_emb: np.ndarray  # (K, D) unit embeddings of the task's class prompts through this model's text tower
    text_scale: float  # the text tower's learned temperature, which calibrates zero-shot softmax
    index: SearchIndex
    loaded_at: float  # unix time the version finished loading
    family: str = IMAGEBIND_FAMILY  # lora: a caption classifier (text, /classify only; no embeddings)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The API modalities this version takes: the towers it was trained with (a lora classifier: text)."""
        if self.family == LORA_FAMILY:
            return CAPTION_MODALITIES
        return tuple(m for m, key in MODALITY_KEYS.items() if key in self.model.config.modalities)

    def refusal(self, endpoint: str, modality: str) -> str | None:
        """Why this model cannot answer `endpoint` for `modality` (the API's 422), or None."""
        if self.family == IMAGEBIND_FAMILY:
            if modality in self.modalities:
                return None
            return (f"the serving model ({self.name} v{self.version}) was trained without {modality} data, so it has "
                    f"no {modality} tower; it takes {', '.join(self.modalities)}")
        if modality not in self.modalities:
            return (f"the serving model ({self.name} v{self.version}) is a {self.family}-family caption classifier: "
                    f"it takes {', '.join(self.modalities)}, not {modality}")
        if not endpoint.startswith("/classify"):
            return (f"the serving model ({self.name} v{self.version}) is a {self.family}-family caption classifier: "
                    f"it has no embedding space for {endpoint}; use /classify")
        return None


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
    """One prepared item → its embedding and zero-shot class (a lora-family model: the caption's class,
    and no embedding)."""
    if served.family == LORA_FAMILY:
        from models.lora_family import classify_captions

        label, probs = classify_captions(served.model, [str(values)])
        return Scored(np.zeros(0, np.float32), float("nan"), int(label[0]), float(probs[0, label[0]]), probs[0])
    embedding, norm = embed_rows(served.model, modality, values[None])
    label, probs = zero_shot(embedding, served.prompt_emb, served.text_scale)
    return Scored(embedding[0], float(norm[0]), int(label[0]), float(probs[0, label[0]]), probs[0])


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


def modality_values(inputs: ModelInputs, modality: str, rows: np.ndarray, caption_minilm) -> np.ndarray:
    """The model's input for `rows` of one API modality (captions through the frozen text encoder)."""
    values = getattr(inputs, INPUT_FIELDS[modality])[rows]
    return caption_minilm(list(values)) if modality == "text" else values


def present_rows(inputs: ModelInputs, modality: str) -> np.ndarray:
    """Indices of the rows that carry `modality`."""
    return np.flatnonzero(getattr(inputs, f"has_{INPUT_FIELDS[modality]}"))


def build_search_index(model: ImageBind, batches: Iterable[tuple[str, ModelInputs]], caption_minilm) -> SearchIndex:
    """Embed every present item of each modality the model takes, over the given (batch_id, inputs) parts.

    `caption_minilm(captions) -> (N, 384)` encodes captions with the frozen text encoder.
    """
    modalities = [m for m, key in MODALITY_KEYS.items() if key in model.config.modalities]
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {m: [] for m in modalities}
    for batch_id, inputs in batches:
        for modality in modalities:
            rows = present_rows(inputs, modality)
            if not len(rows):
                continue
            values = modality_values(inputs, modality, rows, caption_minilm)
            embedded = embed_modality(model, MODALITY_KEYS[modality], values).numpy()
            parts[modality].append((embedded, inputs.sample_id[rows], np.full(len(rows), batch_id)))
    return SearchIndex(
        embeddings={m: np.concatenate([p[0] for p in ps]).astype(np.float32) for m, ps in parts.items() if ps},
        sample_ids={m: np.concatenate([p[1] for p in ps]).astype(str) for m, ps in parts.items() if ps},
        batch_ids={m: np.concatenate([p[2] for p in ps]).astype(str) for m, ps in parts.items() if ps},
    )


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
