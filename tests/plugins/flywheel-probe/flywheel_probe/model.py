"""The probe itself: a logistic-regression head (scikit-learn) over the frozen MiniLM caption embedding,
kept as one torch Linear layer so it saves, loads and serves like any flywheel model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.text import embed_texts, encode_texts

FAMILY = "probe"
EMBED_DIM = 384  # all-MiniLM-L6-v2's sentence embedding
UNSEEN_CLASS_BIAS = -1e4  # a class with no training caption is never predicted
WEIGHTS_FILE, CONFIG_FILE = "weights.pt", "config.json"


class LinearProbe(torch.nn.Module):
    def __init__(self, n_classes: int, dim: int = EMBED_DIM):
        super().__init__()
        self.head = torch.nn.Linear(dim, n_classes)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:  # (N, 384) -> (N, K) logits
        return self.head(embeddings)

    @torch.no_grad()
    def predict_embeddings(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 384) caption embeddings -> (N,) class and (N, K) softmax."""
        probs = self(torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))).softmax(dim=-1).numpy()
        return probs.argmax(axis=1).astype(np.int64), probs

    def classify(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if not len(captions):
            return np.zeros(0, np.int64), np.zeros((0, self.head.out_features), np.float32)
        return self.predict_embeddings(encode_texts([str(c) for c in captions]))


def fit_probe(captions: Sequence[str], labels: np.ndarray, n_classes: int, c: float, seed: int) -> LinearProbe:
    """Logistic regression on the frozen embeddings of labelled captions (labels: class indices), read from
    flywheel's cache of them where an earlier training embedded the same captions."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, dtype=np.int64)
    seen = np.unique(labels)
    if len(seen) < 2:
        raise ValueError(f"the probe needs captions of at least two classes; the window's labelled captions have {seen.tolist()}")
    fitted = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(embed_texts(list(captions)), labels)
    probe = LinearProbe(n_classes)
    weight = np.zeros((n_classes, EMBED_DIM), np.float32)
    bias = np.full(n_classes, UNSEEN_CLASS_BIAS, np.float32)
    # sklearn keeps one row per seen class (a single row, for class 1 against 0, when only two are seen)
    coef, intercept = (np.vstack([-fitted.coef_, fitted.coef_]) / 2, np.r_[-fitted.intercept_, fitted.intercept_] / 2) \
        if len(seen) == 2 else (fitted.coef_, fitted.intercept_)
    weight[fitted.classes_], bias[fitted.classes_] = coef, intercept
    with torch.no_grad():
        probe.head.weight.copy_(torch.from_numpy(weight))
        probe.head.bias.copy_(torch.from_numpy(bias))
    return probe.eval().requires_grad_(False)


def save_probe(probe: LinearProbe, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(probe.state_dict(), directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps({"family": FAMILY, "n_classes": probe.head.out_features}))
    return directory


def load_probe(directory: Path) -> LinearProbe:
    config = json.loads((directory / CONFIG_FILE).read_text())
    probe = LinearProbe(config["n_classes"])
    probe.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True), strict=True)
    return probe.eval().requires_grad_(False)
