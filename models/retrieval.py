"""Cross-modal retrieval and embedding arithmetic on held-out data, by class.

The demo has ten classes and no one-to-one ground truth across modalities (any image of a
seven is a right answer for a spoken "seven"), so retrieval is scored by class:

- Recall@k of a query: 1 when at least one of its k nearest gallery items (cosine) has the
  query's class, else 0; `retrieval_{query}_to_{gallery}_r{k}` is its mean over the queries.
- Galleries: `image` and `audio` are the N evaluation rows; `text` is the prompt set (by
  default one prompt per class, so image→text r1 equals `zero_shot_image_acc` and r10 is 1
  by construction with ten classes). text→X uses the prompts as queries: ten queries, so
  those recalls move in steps of 0.1.
- audio↔text is the emergent pair: no (audio, text) pair is ever trained on.

Embedding arithmetic (the paper's Fig. 5, image + audio → image): the query is
normalize(image of class a + audio of class b), a ≠ b, and it succeeds when the k nearest
held-out images (the query image excluded) include both a class-a and a class-b image.
`arithmetic_image_audio_r{k}` is the success rate; `arithmetic_image_only_r{k}` scores the
image embedding alone by the same rule, the baseline the audio must lift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.evaluate import EvalData, embed_modality
from models.imagebind import AUDIO, TEXT, VISION, ImageBind

RECALL_KS: tuple[int, ...] = (1, 5, 10)  # the k of the logged recall@k metrics
CURVE_MAX_K = 10  # recall@k curves run k = 1..CURVE_MAX_K
ARITHMETIC_KS: tuple[int, ...] = (5, 10)  # neighbours an image+audio query may use to find both classes
ARITHMETIC_PAIRS = 500  # (image, audio) pairs drawn per evaluation; fixed seed, so a stable number
ARITHMETIC_SEED = 0
# (query, gallery) pairs reported, image↔text trained in stage 1, audio↔image in stage 2,
# audio↔text emergent.
RETRIEVAL_PAIRS: tuple[tuple[str, str], ...] = (
    ("image", "text"), ("text", "image"),
    ("audio", "image"), ("image", "audio"),
    ("audio", "text"), ("text", "audio"),
)
_MODALITY = {"image": VISION, "audio": AUDIO, "text": TEXT}


@dataclass
class JointEmbeddings:
    """Unit-norm embeddings of the evaluation rows and the prompts, with each row's class."""

    embedding: dict[str, Tensor]  # "image" (N, D), "audio" (N, D), "text" (P, D)
    label: dict[str, np.ndarray]  # same keys: class per row


def embed_eval_data(model: ImageBind, data: EvalData, prompt_emb: np.ndarray,
                    prompt_label: np.ndarray | None = None) -> JointEmbeddings:
    """Embed images, audio and prompts once; `prompt_label` defaults to row k → class k."""
    data.validate()
    if prompt_label is None:
        prompt_label = np.arange(len(prompt_emb))
    if len(prompt_label) != len(prompt_emb):
        raise ValueError(f"prompt_label has {len(prompt_label)} entries but prompt_emb has {len(prompt_emb)} rows")
    return JointEmbeddings(
        embedding={"image": embed_modality(model, VISION, data.image), "audio": embed_modality(model, AUDIO, data.audio),
                   "text": embed_modality(model, TEXT, prompt_emb)},
        label={"image": data.label, "audio": data.label, "text": np.asarray(prompt_label)},
    )


def first_hit_rank(query: Tensor, query_label: np.ndarray, gallery: Tensor, gallery_label: np.ndarray,
                   max_k: int, exclude_self: bool = False) -> np.ndarray:
    """(Q,) 0-based rank of the first same-class item among each query's `max_k` nearest; max_k when none.

    `exclude_self` drops gallery item i from query i's list (query and gallery are the same rows).
    """
    sims = query @ gallery.T  # (Q, G) cosine
    if exclude_self:
        sims.fill_diagonal_(-float("inf"))
    k = min(max_k, gallery.shape[0])
    nearest = sims.topk(k, dim=1).indices.numpy()  # (Q, k)
    hits = gallery_label[nearest] == np.asarray(query_label)[:, None]  # (Q, k)
    return np.where(hits.any(axis=1), hits.argmax(axis=1), max_k)


def recall_curve(joint: JointEmbeddings, query: str, gallery: str, max_k: int = CURVE_MAX_K) -> np.ndarray:
    """(max_k,) recall@k for k = 1..max_k of `query` rows against the `gallery` rows, by class."""
    ranks = first_hit_rank(joint.embedding[query], joint.label[query], joint.embedding[gallery],
                           joint.label[gallery], max_k)
    if len(ranks) == 0:
        return np.full(max_k, np.nan)
    return np.array([float(np.mean(ranks < k)) for k in range(1, max_k + 1)])


def retrieval_metrics(joint: JointEmbeddings) -> dict[str, float]:
    """`retrieval_{query}_to_{gallery}_r{k}` for every pair in RETRIEVAL_PAIRS and k in RECALL_KS."""
    metrics = {}
    for query, gallery in RETRIEVAL_PAIRS:
        curve = recall_curve(joint, query, gallery, max(RECALL_KS))
        metrics.update({f"retrieval_{query}_to_{gallery}_r{k}": float(curve[k - 1]) for k in RECALL_KS})
    return metrics


def arithmetic_pairs(label: np.ndarray, n_pairs: int = ARITHMETIC_PAIRS, seed: int = ARITHMETIC_SEED) -> np.ndarray:
    """(P, 2) row indices (image row, audio row) whose classes differ, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    n = len(label)
    if n < 2 or len(np.unique(label)) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    first, second = rng.integers(0, n, size=(2, 4 * n_pairs))
    keep = label[first] != label[second]
    return np.stack([first[keep], second[keep]], axis=1)[:n_pairs]


def arithmetic_metrics(joint: JointEmbeddings, ks: tuple[int, ...] = ARITHMETIC_KS) -> dict[str, float]:
    """Success rate of image(a) + audio(b) queries finding both classes among the k nearest images."""
    images, label = joint.embedding["image"], joint.label["image"]
    pairs = arithmetic_pairs(label)
    if len(pairs) == 0:
        return {f"{name}_r{k}": float("nan") for k in ks for name in ("arithmetic_image_audio", "arithmetic_image_only")}
    image_rows, audio_rows = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    queries = {
        "arithmetic_image_audio": F.normalize(images[image_rows] + joint.embedding["audio"][audio_rows], dim=-1),
        "arithmetic_image_only": images[image_rows],
    }
    class_a, class_b = label[pairs[:, 0]], label[pairs[:, 1]]
    metrics = {}
    for name, query in queries.items():
        sims = query @ images.T  # (P, N)
        sims[torch.arange(len(pairs)), image_rows] = -float("inf")  # never retrieve the query image itself
        nearest = sims.topk(min(max(ks), images.shape[0] - 1), dim=1).indices.numpy()  # (P, k)
        for k in ks:
            found = label[nearest[:, :k]]
            both = (found == class_a[:, None]).any(axis=1) & (found == class_b[:, None]).any(axis=1)
            metrics[f"{name}_r{k}"] = float(both.mean())
    return metrics


def evaluate_retrieval(model: ImageBind, data: EvalData, prompt_emb: np.ndarray,
                       prompt_label: np.ndarray | None = None) -> dict[str, float]:
    """Every retrieval and arithmetic metric named in the module docstring, each in [0, 1]."""
    joint = embed_eval_data(model, data, prompt_emb, prompt_label)
    return {**retrieval_metrics(joint), **arithmetic_metrics(joint)}
