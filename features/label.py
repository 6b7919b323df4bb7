"""Label: labelling functions vote, the label model combines them, human labels always win.

Labelling functions (LFs) each give one vote per row, a class 0..9 or ABSTAIN (-1):

- `human`: the manifest's label (also the reference that the other LFs are checked against);
- `caption`: the digit the caption names, as a number word of a demo language or a numeral;
- `champion_image`, `champion_audio`: the champion model's zero-shot predictions, computed in
  `models/` (they need torch) and handed in as `ModelVotes`; a vote below a confidence floor abstains.

The votes form an (N rows x L LFs) matrix; `features.label_model` turns it into a label, a
confidence and the provenance (every LF's vote) per row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from examples.digits.vocabulary import DIGIT_WORDS, fold
from features.label_model import (
    ABSTAIN,
    LabelModelParams,
    LabelStats,
    compute_conflicts,
    compute_lf_stats,
    evaluate_heldout,
    fit_label_model,
)

# Digit words per language (accents stripped, lower case): every language the demo writes.
NUMBER_WORDS: dict[str, tuple[str, ...]] = {lang: tuple(fold(w) for w in words) for lang, words in DIGIT_WORDS.items()}
# Indefinite articles that also spell "one" ("un chiffre", "een cijfer"): they name the digit
# only when nothing else does and they are not the caption's leading article.
ARTICLES_MEANING_ONE: frozenset[str] = frozenset({"un", "une", "una", "uno", "ein", "eine", "een"})
HUMAN, CAPTION = "human", "caption"
LABEL_SOURCES = ("human", "label_model")


def caption_label(caption: str | None, language: str | None) -> int | None:
    """The digit a caption names, or None when it names none or several.

    Words of the caption's own language are tried first; unknown languages fall back to every
    table. A numeral 0..9 counts; a larger number ("10") makes the caption ambiguous.
    """
    if not caption:
        return None
    tokens = re.findall(r"[a-z]+|\d+", fold(caption))
    if len(tokens) > 1 and tokens[0] in ARTICLES_MEANING_ONE:
        tokens = tokens[1:]  # "un chiffre numérisé" is "a digit", not "one digit"
    tables = [NUMBER_WORDS[language]] if language in NUMBER_WORDS else list(NUMBER_WORDS.values())
    found = {digit for table in tables for digit, word in enumerate(table) for token in tokens if token == word}
    numerals = {int(token) for token in tokens if token.isdigit()}
    if any(n > 9 for n in numerals):
        return None
    found |= numerals
    if len(found) > 1 and 1 in found and {t for t in tokens if t in ARTICLES_MEANING_ONE}:
        found.discard(1)  # "c'est un sept": the article gave the 1
    return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class ModelVotes:
    """A model's zero-shot predictions per modality, computed where torch lives (models/)."""

    sample_id: Sequence[str]  # (N,) the rows predicted; rows of the batch missing here abstain
    predicted: Mapping[str, np.ndarray]  # modality ("image", "audio") -> (N,) predicted class 0..9
    confidence: Mapping[str, np.ndarray]  # modality -> (N,) probability the model gave that class
    source: str = "champion"  # LF names are f"{source}_{modality}"

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
    min_model_confidence: float = 0.5  # a model vote less sure than this abstains
    review_threshold: float = 0.7  # label-model rows less confident than this go to human review
    model: LabelModelParams = field(default_factory=LabelModelParams)

    def __post_init__(self) -> None:
        for name in ("min_model_confidence", "review_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Votes:
    """The votes matrix: one column per labelling function."""

    names: tuple[str, ...]  # (L,) LF names
    matrix: np.ndarray  # (N, L) class 0..9 or ABSTAIN

    def column(self, name: str) -> np.ndarray:
        return self.matrix[:, self.names.index(name)]

    def without(self, name: str) -> Votes:
        keep = [j for j, n in enumerate(self.names) if n != name]
        return Votes(tuple(self.names[j] for j in keep), self.matrix[:, keep])


# ---- labelling functions: rows in, one vote per row out -----------------------------------


def human_votes(rows: pd.DataFrame) -> np.ndarray:
    return rows["label"].astype("Int64").fillna(ABSTAIN).to_numpy(dtype=np.int64)


def caption_votes(rows: pd.DataFrame) -> np.ndarray:
    found = [caption_label(c, l) for c, l in zip(rows["caption"], rows["language"])]
    return np.array([ABSTAIN if f is None else f for f in found], dtype=np.int64)


ROW_LFS = {HUMAN: human_votes, CAPTION: caption_votes}


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


def build_votes(rows: pd.DataFrame, model_votes: ModelVotes | None, min_model_confidence: float) -> Votes:
    """The (N, L) votes matrix: the row LFs, then one column per modality of `model_votes`."""
    columns = {name: lf(rows) for name, lf in ROW_LFS.items()}
    if model_votes is not None:
        columns |= model_lf_votes(rows, model_votes, min_model_confidence)
    matrix = np.stack(list(columns.values()), axis=1) if len(rows) else np.empty((0, len(columns)), dtype=np.int64)
    return Votes(tuple(columns), matrix.astype(np.int64))


# ---- the labels table ---------------------------------------------------------------------


def build_labels(
    rows: pd.DataFrame, model_votes: ModelVotes | None = None, params: LabelParams = LabelParams()
) -> tuple[pd.DataFrame, LabelStats]:
    """Labels table for the feature store and its statistics.

    Columns: sample_id, event_timestamp (captured_at), label (Int64, <NA> when every LF abstained),
    label_source ("human" | "label_model" | None), label_confidence (1.0 for human rows, else the
    label model's max posterior), label_votes (JSON object: LF name -> vote, -1 = abstain).
    """
    votes = build_votes(rows, model_votes, params.min_model_confidence)
    human = votes.column(HUMAN)
    weak = votes.without(HUMAN)
    model = fit_label_model(weak.matrix, human, weak.names, params.model)
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

    heldout_accuracy, heldout_coverage = evaluate_heldout(weak.matrix, human, weak.names, params.model)
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
