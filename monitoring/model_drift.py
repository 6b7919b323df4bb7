"""Drift in what the model sees and says: embedding drift per modality, prediction (class-mix) drift.

Embeddings: Evidently's MMD drift method (`embedding_drift_methods.mmd`), called directly on the
champion's embeddings of the reference window and of the current data. Its `EmbeddingsDrift`
metric would also draw a t-SNE chart (16-31 s for 2,000 x 16); the method alone takes well under a
second. The score is the unbiased squared maximum mean discrepancy with an RBF kernel whose width is
the median pairwise distance (reference x current); drift when it reaches the threshold. Unchanged
batches score ~0 (the estimate is unbiased), shifted ones clearly above. Its bootstrap mode is not
used: in 0.7.23 it compares against the 5th percentile of the null, so nearly everything "drifts".
Predictions: Evidently's Jensen-Shannon stat test on the champion's zero-shot class per row; with the task's
class names, an Evidently snapshot of the class mix (`build_prediction_report`), whose per-modality
`ValueDrift` is the same distance (renaming categories does not change it), drawn with the names.
Pure: arrays in, results out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations.stattests import jensenshannon_stat_test
from evidently.legacy.core import ColumnType
from evidently.legacy.metrics.data_drift.embedding_drift_methods import mmd
from evidently.metrics import CategoryCount, ValueDrift

from monitoring.class_mix import name_classes

PREDICTIONS_TAG = "predictions"  # the tag of a snapshot holding a class mix (the data-drift ones have none)


@dataclass(frozen=True)
class ModelDriftParams:
    """params.yaml's `monitor:` thresholds of the model checks (defaults and reasons: flows/settings.py)."""

    embedding_threshold: float  # MMD^2
    embedding_max_rows: int  # rows per side: the kernel matrix is (ref + cur)^2
    prediction_threshold: float  # Jensen-Shannon distance of the class mix
    min_rows: int  # fewer current rows: the check is skipped, not judged
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("embedding_threshold", "prediction_threshold"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.embedding_max_rows < 10 or self.min_rows < 2:
            raise ValueError(f"embedding_max_rows must be >= 10 and min_rows >= 2, got {self.embedding_max_rows}, {self.min_rows}")


@dataclass(frozen=True)
class ScoreResult:
    """One judged quantity (a modality's embeddings, a modality's predictions)."""

    score: float
    threshold: float
    drifted: bool
    method: str
    reference_rows: int
    current_rows: int

    def to_dict(self) -> dict:
        return {"score": round(self.score, 6), "threshold": self.threshold, "drifted": self.drifted,
                "method": self.method, "reference_rows": self.reference_rows, "current_rows": self.current_rows}


def compute_embedding_drift(reference: np.ndarray, current: np.ndarray, params: ModelDriftParams) -> ScoreResult:
    """MMD^2 between (N, D) reference and (M, D) current embeddings; each side sampled to embedding_max_rows."""
    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError(f"embeddings must be (N, D) with the same D; got {reference.shape} and {current.shape}")
    rng = np.random.default_rng(params.seed)
    ref, cur = (_sample_rows(x, params.embedding_max_rows, rng) for x in (reference, current))
    score, _, _ = mmd(threshold=params.embedding_threshold)(pd.DataFrame(cur), pd.DataFrame(ref))
    score = float(score)
    return ScoreResult(score, params.embedding_threshold, score >= params.embedding_threshold, "mmd", len(ref), len(cur))


def compute_prediction_drift(reference: np.ndarray, current: np.ndarray, params: ModelDriftParams) -> ScoreResult:
    """Jensen-Shannon distance between the predicted-class shares of reference and current rows."""
    result = jensenshannon_stat_test(pd.Series(reference, dtype="int64"), pd.Series(current, dtype="int64"),
                                     ColumnType.Categorical, params.prediction_threshold)
    score = float(result.drift_score)
    return ScoreResult(score, params.prediction_threshold, score >= params.prediction_threshold, "jensenshannon",
                       len(reference), len(current))


def build_prediction_report(reference: Mapping[str, np.ndarray], current: Mapping[str, np.ndarray],
                            classes: Sequence[str], threshold: float) -> Any:
    """The Evidently snapshot of the class mix of each modality present on both sides: one categorical column
    per modality holding class names, with its Jensen-Shannon drift (`threshold`) and the count and share of
    each class (`CategoryCount`, whose share counts that modality's rows only). Nothing on both sides: ValueError."""
    modalities = [m for m in current if m in reference and len(reference[m]) and len(current[m])]
    if not modalities:
        raise ValueError("no modality has predictions on both sides: there is no class mix to report")
    frames = []
    for side in (reference, current):
        # Modalities see different rows (a sample without audio has no audio prediction): each column is
        # padded with nulls to the longest, which ValueDrift drops and CategoryCount's share leaves out.
        frames.append(pd.DataFrame({m: pd.Series(name_classes(side[m], classes), dtype=object) for m in modalities}))
    definition = DataDefinition(categorical_columns=modalities)
    metrics = [metric for m in modalities for metric in (
        ValueDrift(column=m, method="jensenshannon", threshold=threshold),
        # No tests on the counts: Evidently's default (within 10 % of the reference) would fail on any
        # batch of another size; the drift verdict is ValueDrift's.
        *(CategoryCount(column=m, category=name, tests=[], share_tests=[]) for name in classes))]
    return Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(frames[1], data_definition=definition),
        reference_data=Dataset.from_pandas(frames[0], data_definition=definition),
        tags=[PREDICTIONS_TAG])


def _sample_rows(values: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= rows:
        return values.astype(np.float64)
    return values[np.sort(rng.choice(len(values), rows, replace=False))].astype(np.float64)
