"""Feature store I/O (Feast): write the per-batch tables, apply definitions, materialize, retrieve.

Feast reads `features/repo/feature_store.yaml`, parameterised by FLYWHEEL_FEAST_DIR, so the
same repo serves any FLYWHEEL_HOME and the `feast` CLI works on it too.
"""

from __future__ import annotations

import contextlib
import importlib
import io
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
    "labels": ("label", "label_source", "label_confidence", "label_votes"),
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


def apply_and_materialize(feast_dir: Path, start: datetime, end: datetime | None = None) -> dict[str, int]:
    """`feast apply` through the Python API, then materialize [start, end] into the online store.

    An explicit window, not `materialize_incremental`: a late batch carries event times older
    than the last materialization, and incremental mode would skip them.
    """
    store = open_store(feast_dir)
    defs = _definitions()
    views = [defs.image_stats, defs.audio_stats, defs.caption_stats, defs.labels]
    present = [view for view in views if (feast_dir / "data" / f"{view.name}.parquet").exists()]
    store.apply([defs.sample, *views, defs.training])
    with contextlib.redirect_stdout(io.StringIO()):  # Feast prints a coloured line per view
        store.materialize(start_date=start, end_date=end or datetime.now(timezone.utc),
                          feature_views=[view.name for view in present])
    return {view.name: len(pd.read_parquet(feast_dir / "data" / f"{view.name}.parquet")) for view in present}


def get_training_frame(feast_dir: Path, entity_rows: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time correct retrieval of the `training` feature service for (sample_id, event_timestamp) rows."""
    store = open_store(feast_dir)
    service = store.get_feature_service("training")
    return store.get_historical_features(entity_df=entity_rows, features=service).to_df()


def get_online_features(feast_dir: Path, sample_ids: list[str], features: list[str]) -> pd.DataFrame:
    store = open_store(feast_dir)
    rows = [{"sample_id": sid} for sid in sample_ids]
    return store.get_online_features(features=features, entity_rows=rows).to_df()


def load_feature_frame(feast_dir: Path, batch_ids: list[str]) -> pd.DataFrame:
    """The stats tables of some batches joined on sample_id, straight from the offline parquet files."""
    frames = []
    for table in ("image_stats", "audio_stats", "caption_stats"):
        path = feast_dir / "data" / f"{table}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"feature table {path} does not exist; run the transform stage first")
        frame = pd.read_parquet(path)
        # A table written before a feature existed lacks its column: missing values, not an error.
        frame = frame[frame["batch_id"].isin(batch_ids)].set_index("sample_id").reindex(columns=list(TABLE_COLUMNS[table]))
        frames.append(frame)
    return pd.concat(frames, axis=1).reset_index()
