"""Feast on the compose stack's services: the online store in Redis, the registry as Feast's SQL
registry on Postgres, the offline store DuckDB over the parquet tables as in the embedded setup.
Materialized features are served from Redis, and nothing is written to the embedded SQLite/file stores.

Redis database 5 (FLYWHEEL_TEST_REDIS_URI) is flushed before and after: no other test may use it.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import redis

from features.store import FeastServices, apply_and_materialize, get_online_features, get_training_frame, open_store
from features.store import upsert_batch_table
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from tests.integration.services import (
    REDIS_URI, fresh_database, postgres_unreachable_reason, redis_unreachable_reason, with_database,
)

pytestmark = pytest.mark.skipif(
    (reason := postgres_unreachable_reason() or redis_unreachable_reason()) is not None, reason=reason or "")

IDS = [f"s{i}" for i in range(6)]
CAPTURED = pd.Timestamp("2026-01-01T00:00:00Z")


@pytest.fixture
def services():
    online = redis.Redis.from_url(REDIS_URI)
    online.flushdb()
    with fresh_database("feast") as database:
        yield FeastServices(online=REDIS_URI, registry=with_database(database, database.rsplit("/", 1)[1], "psycopg"))
    online.flushdb()


@pytest.fixture
def feast_dir(tmp_path, services):
    """One batch of stats and labels, applied to the Postgres registry and materialized into Redis."""
    feast_dir = tmp_path / "feast"
    stats = pd.DataFrame({"sample_id": IDS, "event_timestamp": CAPTURED, **dict.fromkeys(CATEGORICAL_FEATURES, "en")})
    for column in NUMERIC_FEATURES:
        stats[column] = np.arange(len(IDS), dtype="float32")
    for table in ("image_stats", "audio_stats", "caption_stats"):
        upsert_batch_table(feast_dir, table, "b1", stats)
    labels = pd.DataFrame({"sample_id": IDS, "event_timestamp": CAPTURED, "label": pd.array(range(1, 7), dtype="Int64"),
                           "label_source": "human", "label_confidence": 1.0, "label_votes": "{}"})
    upsert_batch_table(feast_dir, "labels", "b1", labels)
    rows = apply_and_materialize(feast_dir, start=datetime(2025, 12, 31, tzinfo=timezone.utc), services=services)
    assert rows == {"image_stats": 6, "audio_stats": 6, "caption_stats": 6, "labels": 6}
    return feast_dir


def test_materialized_features_are_served_from_redis(feast_dir, services):
    assert redis.Redis.from_url(REDIS_URI).dbsize() == len(IDS)  # one hash per entity key, every view in it
    online = get_online_features(feast_dir, ["s1", "s4"], ["labels:label", "image_stats:img_mean"], services)
    online = online.set_index("sample_id")
    assert online.loc["s1", "label"] == 2 and online.loc["s4", "label"] == 5
    assert online.loc["s4", "img_mean"] == pytest.approx(4.0)
    # The embedded stores were never touched.
    assert not (feast_dir / "online_store.db").exists() and not (feast_dir / "registry.db").exists()


def test_the_registry_lives_in_postgres_for_every_later_reader(feast_dir, services):
    """A fresh store (another process: the API, a worker) finds the definitions in Postgres alone."""
    store = open_store(feast_dir, services)
    assert {view.name for view in store.list_feature_views()} == {"image_stats", "audio_stats", "caption_stats", "labels"}
    assert store.get_feature_service("training").name == "training"
    entity = pd.DataFrame({"sample_id": IDS, "event_timestamp": CAPTURED + pd.Timedelta(days=1)})
    frame = get_training_frame(feast_dir, entity, services).set_index("sample_id").loc[IDS]
    assert frame["label"].tolist() == [1, 2, 3, 4, 5, 6]
    # Without the services the embedded (empty) file registry knows nothing of them.
    assert open_store(feast_dir).list_feature_views() == []
