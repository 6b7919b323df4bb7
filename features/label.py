"""Label: labelling functions vote, the label model combines them, human labels always win.

Labelling functions (LFs) each give one vote per row, a class index into the task's classes or
ABSTAIN (-1):

- `human`: the manifest's label (also the reference that the other LFs are checked against);
- the task's own LFs, listed in params.yaml `label.functions` by import path and loaded by
  `features.label_functions` (each returns a class name per clean row, or None);
- `champion_image`, `champion_audio`, …: the champion model's zero-shot predictions, computed in
  `models/` (they need torch) and handed in as `ModelVotes`; a vote below a confidence floor abstains.

The votes form an (N rows x L LFs) matrix; `features.label_model` turns it into a label, a
confidence and the provenance (every LF's vote) per row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.label_functions import LabellingFunction, apply_labelling_function, row_dicts
from features.label_model import (
    ABSTAIN,
    LabelModelParams,
    LabelStats,
    compute_conflicts,
    compute_lf_stats,
    evaluate_heldout,
    fit_label_model,
)
from features.task import Task

HUMAN = "human"
MODEL_SOURCE = "champion"  # ModelVotes' default source: its columns are named f"{MODEL_SOURCE}_{modality}"
LABEL_SOURCES = ("human", "label_model")


def is_built_in_lf_name(name: str) -> bool:
    """Names a task's own LF cannot take: the human column's and the champion's vote columns'."""
    return name == HUMAN or name.startswith(f"{MODEL_SOURCE}_")


@dataclass(frozen=True)
class ModelVotes:
    """A model's zero-shot predictions per modality, computed where torch lives (models/)."""

    sample_id: Sequence[str]  # (N,) the rows predicted; rows of the batch missing here abstain
    predicted: Mapping[str, np.ndarray]  # modality ("image", "audio") -> (N,) predicted class index
    confidence: Mapping[str, np.ndarray]  # modality -> (N,) probability the model gave that class
    source: str = MODEL_SOURCE  # LF names are f"{source}_{modality}"

    def __post_init__(self) -> None:
        if len(set(self.sample_id)) != len(self.sample_id):
            raise ValueError(f"sample_id repeats {len(self.sample_id) - len(set(self.sample_id))} ids; one prediction per sample")
        if set(self.predicted) != set(self.confidence):
            raise ValueError(f"predicted has modalities {sorted(self.predicted)}, confidence {sorted(self.confidence)}")
        for modality in self.predicted:
            for name, values in (("predicted", self.predicted[modality]), ("confidence", self.confidence[modality])):
                if len(values) != len(self.sample_id):
                    raise ValueError(f"{name}[{modality!r}] has {len(values)} values for {len(self.sample_id)} sample_ids")


@dataclass(frozen=True)
class LabelParams:
    """params.yaml's `label:` thresholds (defaults and reasons: flows/settings.py)."""

    min_model_confidence: float  # a model vote less sure than this abstains
    review_threshold: float  # label-model rows less confident than this go to human review
    model: LabelModelParams

    def __post_init__(self) -> None:
        for name in ("min_model_confidence", "review_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Votes:
    """The votes matrix: one column per labelling function."""

    names: tuple[str, ...]  # (L,) LF names
    matrix: np.ndarray  # (N, L) class index or ABSTAIN

    def column(self, name: str) -> np.ndarray:
        return self.matrix[:, self.names.index(name)]

    def without(self, name: str) -> Votes:
        keep = [j for j, n in enumerate(self.names) if n != name]
        return Votes(tuple(self.names[j] for j in keep), self.matrix[:, keep])


# ---- labelling functions: rows in, one vote per row out -----------------------------------


def human_votes(rows: pd.DataFrame) -> np.ndarray:
    return rows["label"].astype("Int64").fillna(ABSTAIN).to_numpy(dtype=np.int64)


def model_lf_votes(rows: pd.DataFrame, model_votes: ModelVotes, min_confidence: float) -> dict[str, np.ndarray]:
    """One vote column per modality, aligned to `rows` by sample_id; unsure or missing predictions abstain."""
    position = pd.Index(model_votes.sample_id).get_indexer(rows["sample_id"])  # -1 where not predicted
    found = position >= 0
    columns = {}
    for modality, predicted in model_votes.predicted.items():
        sure = np.asarray(model_votes.confidence[modality], dtype=float) >= min_confidence
        vote = np.where(sure, np.asarray(predicted, dtype=np.int64), ABSTAIN)
        column = np.full(len(rows), ABSTAIN, dtype=np.int64)
        column[found] = vote[position[found]]
        columns[f"{model_votes.source}_{modality}"] = column
    return columns


def build_votes(
    rows: pd.DataFrame,
    task: Task,
    model_votes: ModelVotes | None = None,
    min_model_confidence: float = 0.5,
    functions: Sequence[LabellingFunction] = (),
) -> Votes:
    """The (N, L) votes matrix: `human`, then the task's LFs in their params.yaml order, then one column
    per modality of `model_votes`. ValueError when two columns would share a name."""
    columns = {HUMAN: human_votes(rows)}
    if functions:
        records = row_dicts(rows)
        for lf in functions:
            if lf.name in columns:
                raise ValueError(f"labelling function {lf.path!r} is named {lf.name!r}, like another vote column "
                                 f"({list(columns)}); rename it")
            columns[lf.name] = apply_labelling_function(lf, records, task)
    if model_votes is not None:
        for name, column in model_lf_votes(rows, model_votes, min_model_confidence).items():
            if name in columns:
                raise ValueError(f"the model's vote column {name!r} has the name of a labelling function; rename "
                                 "that function")
            columns[name] = column
    matrix = np.stack(list(columns.values()), axis=1) if len(rows) else np.empty((0, len(columns)), dtype=np.int64)
    return Votes(tuple(columns), matrix.astype(np.int64))


# ---- the labels table ---------------------------------------------------------------------


def build_labels(
    rows: pd.DataFrame,
    task: Task,
    model_votes: ModelVotes | None,
    params: LabelParams,
    functions: Sequence[LabellingFunction] = (),
) -> tuple[pd.DataFrame, LabelStats]:
    """Labels table for the feature store and its statistics.

    Columns: sample_id, event_timestamp (captured_at), label (Int64 class index, <NA> when every LF abstained),
    label_source ("human" | "label_model" | None), label_confidence (1.0 for human rows, else the
    label model's max posterior), label_votes (JSON object: LF name -> vote, -1 = abstain).
    """
    votes = build_votes(rows, task, model_votes, params.min_model_confidence, functions)
    human = votes.column(HUMAN)
    weak = votes.without(HUMAN)
    model = fit_label_model(weak.matrix, human, weak.names, task.n_classes, params.model)
    predicted, confidence = model.predict(weak.matrix)
    is_human = human != ABSTAIN
    label = np.where(is_human, human, predicted)
    confidence = np.where(is_human, 1.0, confidence)

    labels = pd.DataFrame({"sample_id": rows["sample_id"].array, "event_timestamp": rows["captured_at"].array})
    labels["label"] = pd.array([None if v == ABSTAIN else int(v) for v in label], dtype="Int64")
    labels["label_source"] = pd.Series(
        ["human" if h else "label_model" if p != ABSTAIN else None for h, p in zip(is_human, predicted)], dtype=object
    )
    labels["label_confidence"] = confidence.astype(float)
    labels["label_votes"] = [json.dumps(dict(zip(votes.names, map(int, row)))) for row in votes.matrix]

    heldout_accuracy, heldout_coverage = evaluate_heldout(weak.matrix, human, weak.names, task.n_classes, params.model)
    stats = LabelStats(
        rows=len(rows),
        human=int(is_human.sum()),
        label_model=int((~is_human & (predicted != ABSTAIN)).sum()),
        unlabelled=int((label == ABSTAIN).sum()),
        coverage=float((label != ABSTAIN).mean()) if len(rows) else 0.0,
        conflict_rate=float(compute_conflicts(votes.matrix).mean()) if len(rows) else 0.0,
        low_confidence=int((~is_human & (confidence < params.review_threshold)).sum()),
        heldout_accuracy=heldout_accuracy,
        heldout_coverage=heldout_coverage,
        lfs=compute_lf_stats(votes.matrix, votes.names, model),
    )
    return labels, stats
