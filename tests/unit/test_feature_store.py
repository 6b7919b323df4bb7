"""Feast: point-in-time correct training sets, materialization to the online store, idempotent batches."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from features.store import apply_and_materialize, get_online_features, get_training_frame, upsert_batch_table
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from tests.conftest import PROJECT


def _stats(ids: list[str], ts: pd.Timestamp) -> pd.DataFrame:
    frame = pd.DataFrame({"sample_id": ids, "event_timestamp": ts, **dict.fromkeys(CATEGORICAL_FEATURES, "en")})
    for column in NUMERIC_FEATURES:
        frame[column] = np.arange(len(ids), dtype="float32")
    return frame


@pytest.fixture
def store_dir(tmp_path):
    feast_dir = tmp_path / "feast"
    ids = [f"s{i}" for i in range(6)]
    captured = pd.Timestamp("2026-01-01T00:00:00Z")
    stats = _stats(ids, captured)
    for table in ("image_stats", "audio_stats", "caption_stats"):
        upsert_batch_table(feast_dir, table, "b1", stats)
    # s0-s2 were labelled at capture time; s3-s5 only got their labels a month later.
    labels = pd.DataFrame({
        "sample_id": ids,
        "event_timestamp": [captured] * 3 + [pd.Timestamp("2026-02-01T00:00:00Z")] * 3,
        "label": pd.array([1, 2, 3, 4, 5, 6], dtype="Int64"),
        "label_source": "human",
        "label_confidence": 1.0,
        "label_votes": "{}",
    })
    upsert_batch_table(feast_dir, "labels", "b1", labels)
    apply_and_materialize(feast_dir, start=datetime(2025, 12, 31, tzinfo=timezone.utc))
    return feast_dir


def test_a_label_created_after_the_cutoff_never_leaks_into_the_training_set(store_dir):
    ids = [f"s{i}" for i in range(6)]
    cutoff = pd.DataFrame({"sample_id": ids, "event_timestamp": pd.Timestamp("2026-01-15T00:00:00Z")})
    frame = get_training_frame(store_dir, cutoff).set_index("sample_id").loc[ids]
    assert frame["label"].iloc[:3].tolist() == [1, 2, 3]
    assert frame["label"].iloc[3:].isna().all()  # labelled after the cutoff: not visible yet
    assert len(frame) == 6  # entity rows are kept even when every feature is in the future
    later = cutoff.assign(event_timestamp=pd.Timestamp("2026-03-01T00:00:00Z"))
    assert get_training_frame(store_dir, later).set_index("sample_id").loc[ids, "label"].tolist() == [1, 2, 3, 4, 5, 6]


def test_materialized_features_are_served_online(store_dir):
    online = get_online_features(store_dir, ["s1", "s4"], ["labels:label", "image_stats:img_mean"]).set_index("sample_id")
    assert online.loc["s1", "label"] == 2 and online.loc["s4", "label"] == 5
    assert online.loc["s4", "img_mean"] == pytest.approx(4.0)


def test_re_writing_a_batch_replaces_its_rows(store_dir):
    stats = _stats(["s0", "s1"], pd.Timestamp("2026-01-01T00:00:00Z"))
    path = upsert_batch_table(store_dir, "image_stats", "b1", stats)
    assert len(pd.read_parquet(path)) == 2


def test_a_registry_a_killed_apply_cut_off_is_set_aside_and_written_again(store_dir, caplog):
    """Feast rewrites registry.db in place: a kill mid-write left a file no later apply could parse, so every
    run failed in transform. It is set aside, logged, and the next apply writes it whole again."""
    registry = store_dir / "registry.db"
    whole = registry.read_bytes()
    registry.write_bytes(whole[: len(whole) // 2 + 1])
    with caplog.at_level("WARNING", logger="flywheel.store"):
        apply_and_materialize(store_dir, start=datetime(2025, 12, 31, tzinfo=timezone.utc))
    assert (store_dir / "registry.db.unreadable").exists()
    assert any("was unreadable" in r.getMessage() for r in caplog.records)
    cutoff = pd.DataFrame({"sample_id": ["s0"], "event_timestamp": pd.Timestamp("2026-03-01T00:00:00Z")})
    assert get_training_frame(store_dir, cutoff)["label"].tolist() == [1]  # the store works again


def test_feast_is_imported_without_typeguards_recompiling_and_typeguard_stays_as_it_was():
    """import_feast skips Feast's @typechecked instrumentation (two thirds of its import's CPU time,
    benchmarks/feast_import.py): its classes run their own code, work, and typeguard is untouched after."""
    import subprocess
    import sys

    probe = """
import typeguard
decorator = typeguard.typechecked
from features.store import import_feast
import_feast()
from feast import Entity, FeatureService, ValueType
assert "check_argument_types_internal" not in FeatureService.__init__.__code__.co_names
assert typeguard.typechecked is decorator
assert Entity(name="sample", join_keys=["sample_id"], value_type=ValueType.STRING).join_key == "sample_id"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
