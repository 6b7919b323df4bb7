"""Feature store I/O (Feast): write the per-batch tables, apply definitions, materialize, retrieve.

Feast reads `features/repo/feature_store.yaml`, parameterised by FLYWHEEL_FEAST_DIR, so the
same repo serves any FLYWHEEL_HOME and the `feast` CLI works on it too.
"""

from __future__ import annotations

import importlib
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from features.io import save_parquet
from features.transform import AUDIO_FEATURES, CAPTION_FEATURES, CATEGORICAL_FEATURES, IMAGE_FEATURES

REPO_DIR = Path(__file__).parent / "repo"
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "image_stats": IMAGE_FEATURES,
    "audio_stats": AUDIO_FEATURES,
    "caption_stats": (*CAPTION_FEATURES, *CATEGORICAL_FEATURES),
    "labels": ("label", "label_source"),
}
KEYS = ("sample_id", "event_timestamp", "batch_id")


def upsert_batch_table(feast_dir: Path, table: str, batch_id: str, frame: pd.DataFrame) -> Path:
    """Replace this batch's rows in a feature table; other batches stay. Re-running a batch never duplicates."""
    path = feast_dir / "data" / f"{table}.parquet"
    columns = [*KEYS, *TABLE_COLUMNS[table]]
    fresh = frame.assign(batch_id=batch_id)[columns]
    if path.exists():
        existing = pd.read_parquet(path)
        fresh = pd.concat([existing[existing["batch_id"] != batch_id], fresh], ignore_index=True)
    save_parquet(path, fresh)
    return path


def open_store(feast_dir: Path):
    """A FeatureStore on this state folder (imports Feast lazily: it takes seconds)."""
    from feast import FeatureStore

    os.environ["FLYWHEEL_FEAST_DIR"] = str(feast_dir.absolute())
    (feast_dir / "data").mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(REPO_DIR))


def _definitions():
    """(Re)import the declarative repo module so its paths follow the current FLYWHEEL_FEAST_DIR."""
    if str(REPO_DIR) not in sys.path:
        sys.path.insert(0, str(REPO_DIR))
    module = sys.modules.get("definitions")
    return importlib.reload(module) if module else importlib.import_module("definitions")


def apply_and_materialize(feast_dir: Path, end: datetime | None = None) -> dict[str, int]:
    """`feast apply` through the Python API, then incremental materialization into the online store."""
    store = open_store(feast_dir)
    defs = _definitions()
    views = [defs.image_stats, defs.audio_stats, defs.caption_stats, defs.labels]
    store.apply([defs.sample, *views, defs.training])
    store.materialize_incremental(end_date=end or datetime.now(timezone.utc))
    return {view.name: len(pd.read_parquet(feast_dir / "data" / f"{view.name}.parquet")) for view in views}


def get_training_frame(feast_dir: Path, entity_rows: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time correct retrieval of the `training` feature service for (sample_id, event_timestamp) rows."""
    store = open_store(feast_dir)
    service = store.get_feature_service("training")
    return store.get_historical_features(entity_df=entity_rows, features=service).to_df()


def get_online_features(feast_dir: Path, sample_ids: list[str], features: list[str]) -> pd.DataFrame:
    store = open_store(feast_dir)
    rows = [{"sample_id": sid} for sid in sample_ids]
    return store.get_online_features(features=features, entity_rows=rows).to_df()
