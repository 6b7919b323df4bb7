"""Label: human labels where present, else a labelling function that reads number words in captions.

Labels are the expensive part: the manifest's human labels always win; the caption
function covers the rest where a caption names exactly one digit. Conflicts are counted.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import pandas as pd

# Digit words per language (accents stripped, lower case).
NUMBER_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "de": ("null", "eins", "zwei", "drei", "vier", "funf", "sechs", "sieben", "acht", "neun"),
    "fr": ("zero", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
}
# Inflected or alternative forms that still name the digit.
EXTRA_WORDS: dict[str, int] = {"eine": 1, "ein": 1, "une": 1, "una": 1, "un": 1}
LABEL_SOURCES = ("human", "caption")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def caption_label(caption: str | None, language: str | None) -> int | None:
    """The digit a caption names, or None when it names none or several.

    Words of the caption's own language are tried first; unknown languages fall back to
    every table. Articles such as German "eine" are ignored unless nothing else is found.
    """
    if not caption:
        return None
    words = re.findall(r"[a-z]+|\d", _fold(caption))
    tables = [NUMBER_WORDS[language]] if language in NUMBER_WORDS else list(NUMBER_WORDS.values())
    found = {digit for table in tables for digit, word in enumerate(table) for token in words if token == word}
    found |= {int(token) for token in words if token.isdigit()}
    ambiguous_articles = {EXTRA_WORDS[t] for t in words if t in EXTRA_WORDS}
    if len(found) > 1 and ambiguous_articles:
        found -= ambiguous_articles if len(found - ambiguous_articles) == 1 else set()
    return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class LabelStats:
    human: int
    caption: int
    unlabelled: int
    conflicts: int  # human label disagrees with the caption function (the human one is kept)
    caption_agreement: float | None  # caption-function accuracy on rows with a human label


def build_labels(rows: pd.DataFrame) -> tuple[pd.DataFrame, LabelStats]:
    """Labels table for the feature store: sample_id, event_timestamp, label, label_source."""
    weak = [caption_label(c, l) for c, l in zip(rows["caption"], rows["language"])]
    human = rows["label"].astype("Int64")
    labels = pd.DataFrame({"sample_id": rows["sample_id"], "event_timestamp": rows["captured_at"]})
    labels["label"] = human.where(human.notna(), pd.array(weak, dtype="Int64"))
    labels["label_source"] = [
        "human" if pd.notna(h) else ("caption" if w is not None else None) for h, w in zip(human, weak)
    ]
    checked = [(int(h), w) for h, w in zip(human, weak) if pd.notna(h) and w is not None]
    conflicts = sum(h != w for h, w in checked)
    stats = LabelStats(
        human=int(human.notna().sum()),
        caption=sum(1 for s in labels["label_source"] if s == "caption"),
        unlabelled=int(labels["label"].isna().sum()),
        conflicts=conflicts,
        caption_agreement=(1 - conflicts / len(checked)) if checked else None,
    )
    return labels, stats
