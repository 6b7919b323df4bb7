"""Caption features: the language a caption is written in, whether it names a digit, and their trip through Feast."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from examples.digits.demo import GENERIC_CAPTIONS
from features.label import caption_label
from features.store import TABLE_COLUMNS, apply_and_materialize, get_training_frame, upsert_batch_table
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES, compute_sample_features, detect_language


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


def test_detected_language_matches_the_declared_one_for_demo_captions_of_every_language(demo_captions):
    detected = demo_captions["caption"].map(detect_language)
    accuracy = (detected == demo_captions["language"]).groupby(demo_captions["language"]).mean()
    assert set(accuracy.index) == {"en", "de", "fr", "es", "it", "nl"}
    assert (accuracy >= 0.95).all(), accuracy.to_dict()


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # sentences outside the demo's templates: function words carry them
        ("The cat is on the table", "en"),
        ("Der Hund ist in dem Haus", "de"),
        ("Le chat est sur la table", "fr"),
        ("El perro está en la casa", "es"),
        ("Il gatto è sulla tavola", "it"),
        ("De hond is in het huis", "nl"),
        ("vier", "unknown"),  # German or Dutch: a tie is not a guess
        ("zero", "unknown"),
        ("7", "unknown"),
        ("xyzzy qwerty", "unknown"),
        ("", "unknown"),
    ],
)
def test_language_detector_reads_function_words_and_refuses_to_guess(text, expected):
    assert detect_language(text) == expected


def test_features_say_whether_a_caption_names_one_digit(demo_captions):
    rows = _caption_rows(demo_captions)
    no_caption = rows.iloc[:1].assign(sample_id="no-caption", caption=None)
    frame = compute_sample_features(Path("unused"), pd.concat([rows, no_caption], ignore_index=True), "b1")

    assert {"cap_number_found", "cap_language_detected"} <= set(frame.columns)
    assert "cap_number_found" in NUMERIC_FEATURES and "cap_language_detected" in CATEGORICAL_FEATURES
    captioned = frame.iloc[:-1]
    names_digit = [caption_label(c, l) is not None for c, l in zip(rows["caption"], rows["language"])]
    assert captioned["cap_number_found"].tolist() == [float(n) for n in names_digit]
    generic = [c in GENERIC_CAPTIONS[l] for c, l in zip(rows["caption"], rows["language"])]
    assert any(generic) and captioned["cap_number_found"].tolist() == [0.0 if g else 1.0 for g in generic]
    assert (captioned["cap_language_detected"] == rows["language"]).mean() >= 0.95
    missing = frame.iloc[-1]
    assert np.isnan(missing["cap_number_found"]) and missing["cap_language_detected"] is None


def test_caption_stats_round_trip_through_the_feature_store(demo_captions, tmp_path):
    rows = _caption_rows(demo_captions.iloc[::10].reset_index(drop=True))
    rows.loc[0, "caption"] = None  # a missing caption travels as null, not as a string
    frame = compute_sample_features(Path("unused"), rows, "b1")
    feast_dir = tmp_path / "feast"
    for table in ("image_stats", "audio_stats", "caption_stats"):
        upsert_batch_table(feast_dir, table, "b1", frame)
    labels = frame[["sample_id", "event_timestamp"]].assign(
        label=pd.array([1] * len(frame), dtype="Int64"), label_source="human", label_confidence=1.0, label_votes="{}"
    )
    upsert_batch_table(feast_dir, "labels", "b1", labels)
    assert {"cap_number_found", "cap_language_detected"} <= set(TABLE_COLUMNS["caption_stats"])
    apply_and_materialize(feast_dir, start=datetime(2025, 12, 31, tzinfo=timezone.utc))

    entities = frame[["sample_id"]].assign(event_timestamp=pd.Timestamp("2030-01-01T00:00:00Z"))
    served = get_training_frame(feast_dir, entities).set_index("sample_id").loc[frame["sample_id"]]
    assert served["cap_language_detected"].iloc[1:].tolist() == frame["cap_language_detected"].iloc[1:].tolist()
    assert served["cap_number_found"].iloc[1:].tolist() == frame["cap_number_found"].iloc[1:].tolist()
    assert pd.isna(served["cap_language_detected"].iloc[0]) and pd.isna(served["cap_number_found"].iloc[0])
    assert set(served["cap_language_detected"].iloc[1:]) >= {"en", "it"}
    assert served["language"].tolist() == frame["language"].tolist()
