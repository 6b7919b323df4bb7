"""Contrastive losses for binding two modalities: pure functions of logits and labels.

ImageBind trains every pair with symmetric InfoNCE (CLIP's loss). A task of few classes puts
many examples of each class in one batch (10 classes: about 13 per class in 128): plain InfoNCE
would push apart pairs that share a class (false negatives). `contrastive_targets` turns the
labels we know into extra positives; unknown labels (-1) fall back to the diagonal alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

UNKNOWN_LABEL = -1  # label value meaning "not annotated"


def contrastive_targets(batch_size: int, labels: Tensor | None = None) -> Tensor:
    """(B, B) row-stochastic target matrix: each row spreads its mass over its positives.

    Row i's positives are i itself and every j whose label is known and equal to i's.
    Without labels this is the identity, i.e. plain InfoNCE.
    """
    eye = torch.eye(batch_size, device=None if labels is None else labels.device)  # on the labels' device (CUDA)
    if labels is None:
        return eye
    if labels.shape != (batch_size,):
        raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}")
    known = labels != UNKNOWN_LABEL  # (B,)
    same = (labels[:, None] == labels[None, :]) & known[:, None] & known[None, :]  # (B, B)
    positives = torch.maximum(same.to(eye.dtype), eye)
    return positives / positives.sum(dim=1, keepdim=True)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of −Σ_j targets[i, j] · log softmax(logits[i])[j]."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def symmetric_info_nce(logits: Tensor, targets: Tensor | None = None) -> Tensor:
    """CLIP/ImageBind loss: mean of a→b and b→a cross-entropy over (B, B) logits a @ b.T.

    `logits` must already include the temperature (ImageBind's postprocessors scale the
    embeddings). `targets` defaults to the identity (one positive per row).
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be a square (B, B) matrix, got {tuple(logits.shape)}")
    if targets is None:
        targets = torch.eye(logits.shape[0], dtype=logits.dtype, device=logits.device)
    targets = targets.to(logits)
    # Renormalise the transpose so the b→a rows are distributions even for asymmetric targets.
    targets_t = targets.T / targets.T.sum(dim=1, keepdim=True)
    return 0.5 * (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.T, targets_t))


def pair_loss(a: Tensor, b: Tensor, labels: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between two (B, D) embedding batches whose rows i are pairs.

    With `labels`, rows sharing a known label count as positives too.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired embeddings must both be (B, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    targets = contrastive_targets(a.shape[0], labels)
    return symmetric_info_nce(a @ b.T, targets)
