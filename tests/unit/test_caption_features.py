"""Caption features know nothing of the task: length, words, the share of letters and the script the
caption is written in; and their trip through Feast."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.store import TABLE_COLUMNS, apply_and_materialize, get_training_frame, upsert_batch_table
from features.transform import (
    CAPTION_FEATURES,
    CATEGORICAL_FEATURES,
    NO_SCRIPT,
    caption_script,
    caption_stats,
    compute_sample_features,
)


def _manifest(source: Path) -> pd.DataFrame:
    lines = (source / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return pd.DataFrame([json.loads(line) for line in lines]).drop_duplicates("sample_id", ignore_index=True)


@pytest.fixture(scope="module")
def demo_captions(demo_batch_factory) -> pd.DataFrame:
    """Manifest rows of a plain batch (en/de/fr/es) and a language-drifted one (it/nl)."""
    plain = _manifest(demo_batch_factory(samples=80, seed=3, fault_rate=0.05))
    drifted = _manifest(demo_batch_factory(samples=80, seed=3, drift="language"))
    return pd.concat([plain, drifted.assign(sample_id="it-nl-" + drifted["sample_id"])], ignore_index=True)


def _caption_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows as clean hands them to transform, captions only (no files to decode)."""
    return manifest.assign(image=None, audio=None)[["sample_id", "captured_at", "image", "audio", "caption", "language"]]


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("a red circle", "LATIN"),
        ("eine handgeschriebene Fünf", "LATIN"),
        ("красный круг", "CYRILLIC"),
        ("κόκκινος κύκλος", "GREEK"),
        ("赤い円", "CJK"),  # two Han ideographs outweigh one hiragana
        ("دائرة حمراء", "ARABIC"),
        ("Круг (circle)", "LATIN"),  # the script most letters are in
        ("7", NO_SCRIPT),
        ("42 / 7 !", NO_SCRIPT),
        ("", NO_SCRIPT),
    ],
)
def test_the_script_is_the_one_most_letters_are_written_in(text, script):
    assert caption_script(text) == script


def test_caption_stats_count_characters_words_and_letters():
    stats = caption_stats("a 7 ok")
    assert stats == {"cap_chars": 6.0, "cap_words": 3.0, "cap_letter_share": pytest.approx(3 / 6), "cap_script": "LATIN"}
    assert caption_stats("12345")["cap_letter_share"] == 0.0


def test_features_of_demo_captions_and_a_missing_caption(demo_captions):
    rows = _caption_rows(demo_captions)
    no_caption = rows.iloc[:1].assign(sample_id="no-caption", caption=None)
    frame = compute_sample_features(Path("unused"), pd.concat([rows, no_caption], ignore_index=True), "b1")

    assert CAPTION_FEATURES == ("cap_chars", "cap_words", "cap_letter_share")
    assert CATEGORICAL_FEATURES == ("language", "cap_script")
    captioned = frame.iloc[:-1]
    assert captioned["cap_chars"].tolist() == [float(len(c)) for c in rows["caption"]]
    assert ((captioned["cap_letter_share"] > 0.5) & (captioned["cap_letter_share"] <= 1.0)).all()
    assert set(captioned["cap_script"]) == {"LATIN"}  # every demo language is written in Latin letters
    assert captioned["language"].tolist() == rows["language"].tolist()
    missing = frame.iloc[-1]
    assert np.isnan(missing["cap_letter_share"]) and missing["cap_script"] is None


def test_caption_stats_round_trip_through_the_feature_store(demo_captions, tmp_path):
    rows = _caption_rows(demo_captions.iloc[::10].reset_index(drop=True))
    rows.loc[0, "caption"] = None  # a missing caption travels as null, not as a string
    rows.loc[1, "caption"] = "красный круг"
    frame = compute_sample_features(Path("unused"), rows, "b1")
    feast_dir = tmp_path / "feast"
    for table in ("image_stats", "audio_stats", "caption_stats"):
        upsert_batch_table(feast_dir, table, "b1", frame)
    labels = frame[["sample_id", "event_timestamp"]].assign(
        label=pd.array([1] * len(frame), dtype="Int64"), label_source="human", label_confidence=1.0, label_votes="{}"
    )
    upsert_batch_table(feast_dir, "labels", "b1", labels)
    assert {"cap_letter_share", "cap_script"} <= set(TABLE_COLUMNS["caption_stats"])
    apply_and_materialize(feast_dir, start=datetime(2025, 12, 31, tzinfo=timezone.utc))

    entities = frame[["sample_id"]].assign(event_timestamp=pd.Timestamp("2030-01-01T00:00:00Z"))
    served = get_training_frame(feast_dir, entities).set_index("sample_id").loc[frame["sample_id"]]
    assert served["cap_script"].iloc[1:].tolist() == frame["cap_script"].iloc[1:].tolist()
    assert served["cap_letter_share"].iloc[1:].tolist() == frame["cap_letter_share"].iloc[1:].tolist()
    assert pd.isna(served["cap_script"].iloc[0]) and pd.isna(served["cap_letter_share"].iloc[0])
    assert set(served["cap_script"].iloc[1:]) == {"LATIN", "CYRILLIC"}
    assert served["language"].tolist() == frame["language"].tolist()
