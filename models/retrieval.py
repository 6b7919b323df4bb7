"""Cross-modal retrieval and embedding arithmetic on held-out data, by class.

There is no one-to-one ground truth across modalities (any image of a class is a right answer
for a sound of that class), so retrieval is scored by class:

- Recall@k of a query: 1 when at least one of its k nearest gallery items (cosine) has the
  query's class, else 0; `retrieval_{query}_to_{gallery}_r{k}` is its mean over the queries.
- Modalities: `image`, the prompts as `text`, and each bound modality (audio, depth, thermal,
  IMU) the evaluation rows carry and the model embeds; a modality the rows lack has no pair.
- Galleries: `image` and each bound modality m are the N evaluation rows; `text` is the prompt
  set (by default one prompt per class, so image→text r1 equals `zero_shot_image_acc` and r{K}
  is 1 by construction with K classes). text→X uses the prompts as queries: K queries, so
  those recalls move in steps of 1/K.
- Pairs: image↔text (trained in stage 1), then per bound modality m, m↔image (trained in
  stage 2) and m↔text, the emergent pair: no (m, text) pair is ever trained on.

Embedding arithmetic (the paper's Fig. 5, image + audio → image), for each bound modality m:
the query is normalize(image of class a + m of class b), a ≠ b, and it succeeds when the k
nearest held-out images (the query image excluded) include both a class-a and a class-b image.
`arithmetic_image_{m}_r{k}` is the success rate; `arithmetic_image_only_r{k}` scores the
image embedding alone by the same rule, the baseline m must lift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.evaluate import EvalData, embed_modality, evaluated_modalities
from models.imagebind import AUDIO, TEXT, VISION, ImageBind

RECALL_KS: tuple[int, ...] = (1, 5, 10)  # the k of the logged recall@k metrics
CURVE_MAX_K = 10  # recall@k curves run k = 1..CURVE_MAX_K
ARITHMETIC_KS: tuple[int, ...] = (5, 10)  # neighbours an image + bound-modality query may use to find both classes
ARITHMETIC_PAIRS = 500  # (image row, bound-modality row) pairs drawn per evaluation; fixed seed, so a stable number
ARITHMETIC_SEED = 0
IMAGE_TEXT_PAIRS: tuple[tuple[str, str], ...] = (("image", "text"), ("text", "image"))  # trained in stage 1


def bound_pairs(modality: str) -> tuple[tuple[str, str], ...]:
    """The (query, gallery) pairs of one bound modality: with images (stage 2), with text (emergent)."""
    return ((modality, "image"), ("image", modality), (modality, "text"), ("text", modality))


# The pairs reported when the rows carry audio and no other bound modality (the common case).
RETRIEVAL_PAIRS: tuple[tuple[str, str], ...] = IMAGE_TEXT_PAIRS + bound_pairs(AUDIO)


@dataclass
class JointEmbeddings:
    """Unit-norm embeddings of the evaluation rows and the prompts, with each row's class."""

    embedding: dict[str, Tensor]  # "image" (N, D), "text" (P, D), and each bound modality given, e.g. "audio" (N, D)
    label: dict[str, np.ndarray]  # same keys: class per row

    def bound(self) -> tuple[str, ...]:
        """The bound modalities embedded (neither image nor text), in the order given."""
        return tuple(m for m in self.embedding if m not in ("image", "text"))

    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The (query, gallery) pairs these embeddings support: image↔text, then each bound modality's."""
        return IMAGE_TEXT_PAIRS + tuple(pair for m in self.bound() for pair in bound_pairs(m))


def embed_eval_data(model: ImageBind, data: EvalData, prompt_emb: np.ndarray,
                    prompt_label: np.ndarray | None = None) -> JointEmbeddings:
    """Embed images, prompts and each bound modality the rows carry and the model embeds, once;
    `prompt_label` defaults to row k → class k."""
    data.validate()
    if prompt_label is None:
        prompt_label = np.arange(len(prompt_emb))
    if len(prompt_label) != len(prompt_emb):
        raise ValueError(f"prompt_label has {len(prompt_label)} entries but prompt_emb has {len(prompt_emb)} rows")
    bound = evaluated_modalities(model, data)
    given = data.bound()
    return JointEmbeddings(
        embedding={"image": embed_modality(model, VISION, data.image),
                   **{m: embed_modality(model, m, given[m]) for m in bound},
                   "text": embed_modality(model, TEXT, prompt_emb)},
        label={"image": data.label, **{m: data.label for m in bound}, "text": np.asarray(prompt_label)},
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
    """`retrieval_{query}_to_{gallery}_r{k}` for every pair the embeddings support and k in RECALL_KS."""
    metrics = {}
    for query, gallery in joint.pairs():
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
    """Per bound modality m, the success rate of image(a) + m(b) queries finding both classes among the
    k nearest images (`arithmetic_image_{m}_r{k}`), and the image-only baseline (`arithmetic_image_only_r{k}`).
    No bound modality: no arithmetic, no metric."""
    if not joint.bound():
        return {}
    images, label = joint.embedding["image"], joint.label["image"]
    names = [*(f"arithmetic_image_{m}" for m in joint.bound()), "arithmetic_image_only"]
    pairs = arithmetic_pairs(label)
    if len(pairs) == 0:
        return {f"{name}_r{k}": float("nan") for k in ks for name in names}
    image_rows, other_rows = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    queries = {f"arithmetic_image_{m}": F.normalize(images[image_rows] + joint.embedding[m][other_rows], dim=-1)
               for m in joint.bound()}
    queries["arithmetic_image_only"] = images[image_rows]
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
