"""Retrieval by class and embedding arithmetic: hand-built embedding spaces with known answers."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.retrieval import (
    ARITHMETIC_KS,
    RECALL_KS,
    RETRIEVAL_PAIRS,
    JointEmbeddings,
    arithmetic_metrics,
    first_hit_rank,
    recall_curve,
    retrieval_metrics,
)


def one_hot_space(label: np.ndarray, dim: int = 10, noise: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Each row near its class's axis: a perfectly aligned modality."""
    generator = torch.Generator().manual_seed(seed)
    base = F.one_hot(torch.from_numpy(label), dim).float()
    return F.normalize(base + noise * torch.randn(base.shape, generator=generator), dim=-1)


def aligned_space(label: np.ndarray) -> JointEmbeddings:
    prompts = np.arange(10)
    return JointEmbeddings(
        embedding={"image": one_hot_space(label, seed=1), "audio": one_hot_space(label, seed=2),
                   "text": one_hot_space(prompts, seed=3)},
        label={"image": label, "audio": label, "text": prompts},
    )


def test_first_hit_rank_is_the_position_of_the_first_same_class_item() -> None:
    query = torch.tensor([[1.0, 0.0]])
    gallery = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]]), dim=-1)
    gallery_label = np.array([5, 5, 3, 3])
    assert first_hit_rank(query, np.array([3]), gallery, gallery_label, max_k=4).tolist() == [2]
    assert first_hit_rank(query, np.array([5]), gallery, gallery_label, max_k=4).tolist() == [0]
    assert first_hit_rank(query, np.array([7]), gallery, gallery_label, max_k=4).tolist() == [4]  # no hit: max_k


def test_recall_curve_counts_a_query_once_its_class_is_within_k() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gallery = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]]), dim=-1)
    joint = JointEmbeddings({"audio": query, "image": gallery}, {"audio": np.array([3, 3]), "image": np.array([5, 5, 3, 3])})
    curve = recall_curve(joint, "audio", "image", max_k=4)
    # query 0's first 3 sits at rank 2 (k=3), query 1's at rank 0 (k=1)
    assert curve.tolist() == [0.5, 0.5, 1.0, 1.0]


def test_an_aligned_space_retrieves_perfectly_and_names_every_pair() -> None:
    label = np.repeat(np.arange(10), 5)
    metrics = retrieval_metrics(aligned_space(label))
    assert set(metrics) == {f"retrieval_{q}_to_{g}_r{k}" for q, g in RETRIEVAL_PAIRS for k in RECALL_KS}
    assert all(value == 1.0 for value in metrics.values()), metrics


def test_a_shuffled_audio_space_falls_to_chance() -> None:
    label = np.repeat(np.arange(10), 30)
    joint = aligned_space(label)
    joint.embedding["audio"] = joint.embedding["audio"][torch.from_numpy(np.random.default_rng(0).permutation(300))]
    metrics = retrieval_metrics(joint)
    assert metrics["retrieval_audio_to_text_r1"] < 0.25  # chance is 0.1
    assert metrics["retrieval_image_to_text_r1"] == 1.0  # the other pairs are untouched


def test_image_plus_audio_finds_both_classes_where_the_image_alone_does_not() -> None:
    label = np.repeat(np.arange(10), 6)
    metrics = arithmetic_metrics(aligned_space(label))
    assert set(metrics) == {f"{name}_r{k}" for name in ("arithmetic_image_audio", "arithmetic_image_only")
                            for k in ARITHMETIC_KS}
    assert metrics["arithmetic_image_audio_r10"] == 1.0
    assert metrics["arithmetic_image_only_r5"] == 0.0  # 5 other images of class a come first
