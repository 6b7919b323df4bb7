"""What a served model takes and answers: a family's `ServingSpec` (models.family.ModelFamily.serving_spec).

The API, batch scoring and the inference log read only this: the modalities and endpoints the model
serves, how a text payload and the lake's inputs become model inputs, and one `predict` over prepared
items. A family with an embedding space also returns embeddings (and may carry a search index).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.inputs import ModelInputs

EMBED, CLASSIFY, SEARCH = "/embed", "/classify", "/search"  # the API's endpoints (and their /upload forms)
INPUT_FIELDS: dict[str, str] = {"image": "image", "audio": "audio", "text": "caption", "depth": "depth",
                                "thermal": "thermal", "imu": "imu"}  # API modality → its ModelInputs field
_TEXT_ENCODER_LOCK = threading.Lock()  # a fast tokenizer raises "Already borrowed" when threads share it


@dataclass(frozen=True)
class Predictions:
    labels: np.ndarray  # (N,) class index into the served task's classes
    probs: np.ndarray  # (N, K) softmax over the task's classes
    embeddings: np.ndarray | None = None  # (N, D) unit embeddings; None: the model has no embedding space
    norms: np.ndarray | None = None  # (N,) norms before normalisation


@dataclass(frozen=True)
class SearchIndex:
    """Unit embeddings of the ingested items per target modality, with their sample and batch ids."""

    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # modality → (N, D) float32
    sample_ids: dict[str, np.ndarray] = field(default_factory=dict)  # modality → (N,) str
    batch_ids: dict[str, np.ndarray] = field(default_factory=dict)  # modality → (N,) str

    def counts(self) -> dict[str, int]:
        return {m: int(len(ids)) for m, ids in self.sample_ids.items()}


def encode_text_item(text: str) -> np.ndarray:
    """A text → its (384,) frozen MiniLM sentence embedding (what a text tower or a probe on it takes)."""
    from models.text import encode_texts

    with _TEXT_ENCODER_LOCK:
        return encode_texts([text])[0]


def present_rows(inputs: ModelInputs, modality: str) -> np.ndarray:
    """Indices of the rows that carry `modality`."""
    return np.flatnonzero(getattr(inputs, f"has_{INPUT_FIELDS[modality]}"))


def lake_values(inputs: ModelInputs, modality: str, rows: np.ndarray) -> np.ndarray:
    """The model's input for `rows` of one API modality, as the API prepares a payload of it (captions
    through the frozen MiniLM text encoder, or flywheel's cache of its embeddings)."""
    from models.text import embed_texts

    values = getattr(inputs, INPUT_FIELDS[modality])[rows]
    return embed_texts(list(values)) if modality == "text" else values


def raw_captions(inputs: ModelInputs, modality: str, rows: np.ndarray) -> np.ndarray:
    """The captions themselves, for a family whose model reads text (its `lake_values`)."""
    return inputs.caption[rows]


def text_as_is(text: str) -> np.ndarray:
    """The checked text as a 0-d array, for a family whose model tokenizes text itself (its `prepare_text`)."""
    return np.array(text)


@dataclass(frozen=True)
class ServingSpec:
    kind: str  # what the model is, in words for a refusal ("multimodal embedding model", "caption classifier")
    modalities: tuple[str, ...]  # the API modalities it takes
    endpoints: tuple[str, ...]  # of EMBED, CLASSIFY, SEARCH
    predict: Callable[[str, np.ndarray], Predictions]  # (API modality, (N, ...) prepared inputs) -> predictions
    prepare_text: Callable[[str], np.ndarray] = encode_text_item  # a checked text payload -> one item's input
    lake_values: Callable[[ModelInputs, str, np.ndarray], np.ndarray] = lake_values  # lake rows -> inputs (batch)
    index: SearchIndex = field(default_factory=SearchIndex)
    embed_dim: int | None = None  # width of the embedding space; None: no embeddings
    n_classes: int | None = None  # a classifier head's outputs (must match the task); None: zero-shot, any prompts

    def refusal(self, served: str, endpoint: str, modality: str) -> str | None:
        """Why the model (`served`: "name vN") cannot answer `endpoint` for `modality` (the API's 422), or None."""
        if modality not in self.modalities:
            return (f"the serving model ({served}) is a {self.kind} that takes {', '.join(self.modalities)}, not "
                    f"{modality}: it has no {modality} tower (the data it was trained on carried no {modality})")
        base = "/" + endpoint.strip("/").split("/")[0]
        if base not in self.endpoints:
            return (f"the serving model ({served}) is a {self.kind}: it answers {', '.join(self.endpoints)}, "
                    f"not {endpoint}")
        return None
