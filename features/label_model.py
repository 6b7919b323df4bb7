"""Label model: combine the votes of labelling functions (LFs) into one label per row.

Each LF votes a class 0..K-1 or abstains (-1). An LF's accuracy is estimated on the rows that
carry a human label (the reference), smoothed by a Beta prior so that a few lucky votes do not
make it look perfect; an LF that never meets a human label keeps the prior's mean. With the
usual symmetric-noise assumption (a wrong vote is any of the K-1 other classes, equally
likely) and LFs independent given the true class, the posterior over classes is a weighted
vote in log-odds:

    score[y] = sum_j  w_j * [vote_j == y],   w_j = log(acc_j * (K - 1) / (1 - acc_j))
    P(y | votes) = softmax(score)             (uniform class prior)

This is the naive-Bayes special case of Snorkel's label model, written in numpy (~80 lines)
because Snorkel pins old versions of numpy/pandas/torch and no maintained alternative is
installed. Everything here is pure: arrays in, arrays and dataclasses out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ABSTAIN = -1


@dataclass(frozen=True)
class LabelModelParams:
    """params.yaml's `label:` prior and held-out check (defaults and reasons: flows/settings.py)."""

    prior_accuracy: float  # accuracy assumed for an LF that never meets a human label (Beta prior mean)
    prior_strength: float  # the prior counts as this many checked votes
    heldout_folds: int  # k of the k-fold held-out check on the human-labelled rows (fewer rows: leave-one-out)

    def __post_init__(self) -> None:
        if not 0.0 < self.prior_accuracy < 1.0:
            raise ValueError(f"prior_accuracy must be strictly between 0 and 1, got {self.prior_accuracy}")
        if self.prior_strength <= 0:
            raise ValueError(f"prior_strength must be positive, got {self.prior_strength}")
        if self.heldout_folds < 2:
            raise ValueError(f"heldout_folds must be at least 2, got {self.heldout_folds}")


@dataclass(frozen=True)
class LabelModel:
    """Fitted per-LF accuracies; `predict_proba` turns votes into a posterior over classes."""

    names: tuple[str, ...]  # LF names, one per vote column
    accuracy: np.ndarray  # (L,) smoothed accuracy against the human labels
    checked: np.ndarray  # (L,) votes that met a human label
    n_classes: int  # K, the task's classes

    @property
    def weights(self) -> np.ndarray:
        """(L,) log-odds weight of one vote; negative for an LF worse than chance."""
        acc = np.clip(self.accuracy, 1e-6, 1 - 1e-6)
        return np.log(acc * (self.n_classes - 1) / (1 - acc))

    def predict_proba(self, votes: np.ndarray) -> np.ndarray:
        """(N, L) votes -> (N, K) posterior; a row where every LF abstains gets the uniform prior."""
        _check_votes(votes, self.names, self.n_classes)
        one_hot = votes[:, :, None] == np.arange(self.n_classes)  # (N, L, K)
        score = np.einsum("nlk,l->nk", one_hot, self.weights)  # (N, K)
        score -= score.max(axis=1, keepdims=True)
        posterior = np.exp(score)
        return posterior / posterior.sum(axis=1, keepdims=True)

    def predict(self, votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(label (N,) with ABSTAIN where no LF voted, confidence (N,) = max posterior)."""
        posterior = self.predict_proba(votes)
        label = np.where((votes != ABSTAIN).any(axis=1), posterior.argmax(axis=1), ABSTAIN)
        return label, posterior.max(axis=1)


def _check_votes(votes: np.ndarray, names: tuple[str, ...], n_classes: int) -> None:
    if votes.ndim != 2 or votes.shape[1] != len(names):
        raise ValueError(f"votes must have shape (N, {len(names)}) for LFs {list(names)}, got {votes.shape}")
    bad = (votes < ABSTAIN) | (votes >= n_classes)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"LF {names[col]!r} voted {votes[row, col]} in row {row}; accepted: a class 0..{n_classes - 1} or {ABSTAIN}")


def fit_label_model(
    votes: np.ndarray,
    reference: np.ndarray,
    names: tuple[str, ...],
    n_classes: int,
    params: LabelModelParams,
) -> LabelModel:
    """Estimate each LF's accuracy on the rows where `reference` (human labels, ABSTAIN = none) is set;
    votes and reference are class indices 0..n_classes-1 (the task's classes).

    `votes` (N, L) must not contain the reference itself: an LF checked against itself is perfect.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2 (the task's classes), got {n_classes}")
    _check_votes(votes, tuple(names), n_classes)
    if reference.shape != (len(votes),):
        raise ValueError(f"reference must have shape ({len(votes)},), got {reference.shape}")
    checked_mask = (votes != ABSTAIN) & (reference != ABSTAIN)[:, None]  # (N, L)
    checked = checked_mask.sum(axis=0)
    correct = (checked_mask & (votes == reference[:, None])).sum(axis=0)
    a = params.prior_strength * params.prior_accuracy  # Beta(a, b) prior, mean prior_accuracy
    accuracy = (correct + a) / (checked + params.prior_strength)
    return LabelModel(tuple(names), accuracy.astype(float), checked.astype(int), n_classes)


def evaluate_heldout(
    votes: np.ndarray,
    reference: np.ndarray,
    names: tuple[str, ...],
    n_classes: int,
    params: LabelModelParams,
) -> tuple[float | None, float | None]:
    """K-fold check on the human-labelled rows: fit without a fold's labels, predict the fold from the
    LF votes alone, compare with its human labels. Returns (accuracy on the rows the model labels,
    share of held-out rows it labels); (None, None) with fewer than two human labels."""
    human_rows = np.flatnonzero(reference != ABSTAIN)
    if len(human_rows) < 2:
        return None, None
    folds = min(params.heldout_folds, len(human_rows))
    fold_of = np.arange(len(human_rows)) % folds  # interleaved: deterministic, and every fold spans the batch
    predicted = np.full(len(human_rows), ABSTAIN)
    for fold in range(folds):
        held = human_rows[fold_of == fold]
        train_reference = reference.copy()
        train_reference[held] = ABSTAIN
        model = fit_label_model(votes, train_reference, names, n_classes, params)
        predicted[fold_of == fold] = model.predict(votes[held])[0]
    covered = predicted != ABSTAIN
    if not covered.any():
        return None, 0.0
    return float((predicted[covered] == reference[human_rows][covered]).mean()), float(covered.mean())


def compute_conflicts(votes: np.ndarray) -> np.ndarray:
    """(N,) True where at least two non-abstaining votes of a row disagree."""
    masked = np.where(votes == ABSTAIN, np.iinfo(np.int64).max, votes)
    low = masked.min(axis=1)
    high = np.where(votes == ABSTAIN, np.iinfo(np.int64).min, votes).max(axis=1)
    return (low != np.iinfo(np.int64).max) & (low != high)


@dataclass(frozen=True)
class LFStats:
    coverage: float  # share of rows where the LF votes
    conflict_rate: float  # share of rows where it votes and another LF votes differently (Snorkel's definition)
    accuracy: float | None  # smoothed estimate against human labels; None for the human LF itself
    checked: int  # its votes that met a human label


@dataclass(frozen=True)
class LabelStats:
    rows: int
    human: int  # rows labelled by a person
    label_model: int  # rows labelled by the label model
    unlabelled: int  # rows where every LF abstained
    coverage: float  # share of rows with a label
    conflict_rate: float  # share of rows whose non-abstaining LFs (the human one included) disagree
    low_confidence: int  # non-human rows under the review threshold, unlabelled ones included
    heldout_accuracy: float | None  # label model vs held-out human labels, on the rows it labels
    heldout_coverage: float | None  # share of held-out human rows the label model labels without them
    lfs: dict[str, LFStats]

    def to_metrics(self) -> dict[str, float]:
        """Flat floats for `mlflow.log_metrics`; statistics that do not exist (no human labels) are left out."""
        metrics: dict[str, float | None] = {
            "label_rows": self.rows, "label_human_rows": self.human, "label_model_rows": self.label_model,
            "label_unlabelled_rows": self.unlabelled, "label_coverage": self.coverage,
            "label_conflict_rate": self.conflict_rate, "label_low_confidence_rows": self.low_confidence,
            "label_heldout_accuracy": self.heldout_accuracy, "label_heldout_coverage": self.heldout_coverage,
        }
        for name, lf in self.lfs.items():
            for key, value in asdict(lf).items():
                metrics[f"lf_{name}_{key}"] = value
        return {key: float(value) for key, value in metrics.items() if value is not None}

    def to_summary(self) -> dict:
        """Nested plain dict for the run summary."""
        return asdict(self)


def compute_lf_stats(votes: np.ndarray, names: tuple[str, ...], model: LabelModel) -> dict[str, LFStats]:
    """Per-LF coverage and conflict rate over every vote column (the human one included), with the
    fitted accuracies of the LFs the model knows."""
    rows = max(len(votes), 1)
    voting = votes != ABSTAIN
    stats = {}
    for j, name in enumerate(names):
        others = np.delete(votes, j, axis=1)
        disagrees = ((others != ABSTAIN) & (others != votes[:, [j]])).any(axis=1) & voting[:, j]
        k = model.names.index(name) if name in model.names else None
        stats[name] = LFStats(
            coverage=float(voting[:, j].sum() / rows),
            conflict_rate=float(disagrees.sum() / rows),
            accuracy=float(model.accuracy[k]) if k is not None else None,
            checked=int(model.checked[k]) if k is not None else 0,
        )
    return stats
