"""Feast: point-in-time correct training sets, materialization to the online store, idempotent batches."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.store import (
    SCHEMA_MARK,
    TABLE_SCHEMAS,
    apply_and_materialize,
    batch_file,
    feature_table_rows,
    get_online_features,
    get_training_frame,
    load_feature_frame,
    read_feature_table,
    table_files,
    upsert_batch_table,
)
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


def test_a_batch_is_written_to_its_own_file_and_other_batches_files_are_not_touched(store_dir):
    """One file per batch: a run neither reads nor rewrites earlier batches (their bytes, and so what DVC stores
    of `feast/data`, stay as they were), and Feast's training set and online store see every batch."""
    first = batch_file(store_dir, "image_stats", "b1")
    before = (first.read_bytes(), first.stat().st_mtime_ns)
    second = upsert_batch_table(store_dir, "image_stats", "b2", _stats(["t0", "t1"], pd.Timestamp("2026-01-02T00:00:00Z")))
    assert table_files(store_dir, "image_stats") == [first, second]
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    assert feature_table_rows(store_dir, "image_stats") == 8
    apply_and_materialize(store_dir, start=datetime(2025, 12, 31, tzinfo=timezone.utc))
    entities = pd.DataFrame({"sample_id": ["s2", "t1"], "event_timestamp": pd.Timestamp("2026-03-01T00:00:00Z")})
    served = get_training_frame(store_dir, entities).set_index("sample_id")
    assert served.loc["s2", "img_mean"] == pytest.approx(2.0) and served.loc["t1", "img_mean"] == pytest.approx(1.0)
    assert get_online_features(store_dir, ["t1"], ["image_stats:img_mean"])["img_mean"].tolist() == [pytest.approx(1.0)]
    assert load_feature_frame(store_dir, ["b2"])["sample_id"].tolist() == ["t0", "t1"]  # only b2's files are read


def test_a_single_file_table_of_an_earlier_flywheel_is_split_by_batch_on_the_next_write(tmp_path):
    feast_dir = tmp_path / "feast"
    (feast_dir / "data").mkdir(parents=True)
    legacy = pd.concat([_stats(["a0", "a1"], pd.Timestamp("2026-01-01T00:00:00Z")).assign(batch_id="old-a"),
                        _stats(["b0"], pd.Timestamp("2026-01-02T00:00:00Z")).assign(batch_id="old/b")])
    legacy.drop(columns=["img_contrast"]).to_parquet(feast_dir / "data" / "image_stats.parquet")  # before a column
    assert read_feature_table(feast_dir, "image_stats")["sample_id"].tolist() == ["a0", "a1", "b0"]  # read as it is
    upsert_batch_table(feast_dir, "image_stats", "new", _stats(["n0"], pd.Timestamp("2026-01-03T00:00:00Z")))
    assert not (feast_dir / "data" / "image_stats.parquet").exists()
    assert len(table_files(feast_dir, "image_stats")) == 3  # "old/b" got a file name of its own, not a subfolder
    table = read_feature_table(feast_dir, "image_stats")
    assert sorted(table["sample_id"]) == ["a0", "a1", "b0", "n0"]
    assert table.set_index("sample_id").loc["b0", "batch_id"] == "old/b"
    assert table.set_index("sample_id")["img_contrast"].isna().to_dict() == {"a0": True, "a1": True, "b0": True, "n0": False}
    for path in table_files(feast_dir, "image_stats"):
        assert pq.read_schema(path).remove_metadata().equals(TABLE_SCHEMAS["image_stats"])


def test_a_batch_file_from_before_a_column_existed_is_rewritten_with_it(store_dir):
    """Feast reads a table's folder as one table: every file must have the table's columns."""
    path = batch_file(store_dir, "caption_stats", "b1")
    pd.read_parquet(path).drop(columns=["cap_script"]).to_parquet(path)
    (path.parent / SCHEMA_MARK).unlink()  # as a folder from before the column has no mark of today's schema
    upsert_batch_table(store_dir, "caption_stats", "b2", _stats(["t0"], pd.Timestamp("2026-01-02T00:00:00Z")))
    assert "cap_script" in pq.read_schema(path).names
    assert read_feature_table(store_dir, "caption_stats", ["b1"])["cap_script"].isna().all()


def test_rows_that_lack_a_column_of_the_table_are_refused(store_dir):
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['label_votes'\]"):
        upsert_batch_table(store_dir, "labels", "b2", pd.DataFrame({
            "sample_id": ["t0"], "event_timestamp": pd.Timestamp("2026-01-02T00:00:00Z"),
            "label": pd.array([1], dtype="Int64"), "label_source": "human", "label_confidence": 1.0}))
    assert read_feature_table(store_dir, "labels")["label"].dtype == "Int64"


def test_a_store_of_an_earlier_flywheel_serves_its_features_before_any_new_write(tmp_path):
    """Retraining without a new batch reads the store through Feast first: opening it splits the old files."""
    feast_dir = tmp_path / "feast"
    (feast_dir / "data").mkdir(parents=True)
    stats = _stats(["a0", "a1"], pd.Timestamp("2026-01-01T00:00:00Z")).assign(batch_id="old")
    labels = stats[["sample_id", "event_timestamp", "batch_id"]].assign(
        label=pd.array([3, 4], dtype="Int64"), label_source="human", label_confidence=1.0, label_votes="{}")
    for table in ("image_stats", "audio_stats", "caption_stats", "labels"):
        (labels if table == "labels" else stats).to_parquet(feast_dir / "data" / f"{table}.parquet")
    apply_and_materialize(feast_dir, start=datetime(2025, 12, 31, tzinfo=timezone.utc))
    assert not list((feast_dir / "data").glob("*.parquet"))
    entities = pd.DataFrame({"sample_id": ["a1"], "event_timestamp": pd.Timestamp("2026-03-01T00:00:00Z")})
    served = get_training_frame(feast_dir, entities)
    assert served["img_mean"].tolist() == [pytest.approx(1.0)] and served["label"].tolist() == [4]
