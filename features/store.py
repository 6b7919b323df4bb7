"""Feature store I/O (Feast): write the per-batch tables, apply definitions, materialize, retrieve.

Feast reads `features/repo/feature_store.yaml`, parameterised by FLYWHEEL_FEAST_DIR, so the
same repo serves any FLYWHEEL_HOME and the `feast` CLI works on it too. The embedded stores
of that file (SQLite online store, file registry) can be swapped for the compose stack's
services: a Redis online store (`redis://host:port/db`) and a SQL registry on Postgres
(`postgresql+psycopg://…`), given as `FeastServices`; the offline store stays DuckDB over
the parquet tables under FLYWHEEL_FEAST_DIR.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd

from features.io import save_parquet
from features.transient import retry_transient
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


REGISTRY_SCHEMES = ("postgresql", "postgresql+psycopg", "sqlite", "mysql", "mysql+pymysql")  # Feast's SQL registry via SQLAlchemy


@dataclass(frozen=True)
class FeastServices:
    """Where the online store and the registry live; None keeps feature_store.yaml's embedded one."""

    online: str | None = None  # redis://[:password@]host:port/db (rediss:// for TLS)
    registry: str | None = None  # a SQLAlchemy URL for Feast's SQL registry, e.g. postgresql+psycopg://user@host/db


def redis_connection_string(url: str) -> str:
    """Feast's `host:port,db=N,password=…,ssl=true` form of a redis:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"Feast online store {url!r} is not a redis://host:port/db or rediss:// URL")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"Feast online store {url!r}: the database {db!r} must be a number")
    options = [f"{parts.hostname}:{parts.port or 6379}", f"db={db}"]
    if parts.password:
        options.append(f"password={unquote(parts.password)}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
    return ",".join(options)


def _unchecked(target=None, **_options):
    """typeguard's `@typechecked`, as it is under `python -O`: the function or class unchanged."""
    return target if target is not None else _unchecked


def import_feast() -> None:
    """Import Feast (seconds, so only where a stage needs it), then quieten output again: its modules set
    DeprecationWarning back to "once" on import.

    Feast decorates its definition classes with typeguard's `@typechecked`, which re-parses and recompiles the
    source of every method as the module loads: about two thirds of `import feast`'s CPU time
    (`benchmarks/feast_import.py`). Those checks catch hand-written definitions of the wrong types; flywheel
    builds its definitions itself (features/repo/definitions.py, tested), so Feast is imported with the
    decorator a no-op, as `python -O` would make it, and typeguard is restored for anyone else."""
    import sys

    if "feast" not in sys.modules:
        import typeguard

        decorator = typeguard.typechecked
        typeguard.typechecked = _unchecked
        try:
            import feast  # noqa: F401
        finally:
            typeguard.typechecked = decorator

    from features.env import quiet_library_output

    quiet_library_output()


def build_repo_config(feast_dir: Path, services: FeastServices = FeastServices()):
    """feature_store.yaml for this state folder, with the online store and registry `services` names."""
    import yaml

    import_feast()
    from feast.repo_config import RepoConfig

    os.environ["FLYWHEEL_FEAST_DIR"] = str(feast_dir.absolute())  # the yaml (and the feast CLI) read it
    raw = yaml.safe_load(os.path.expandvars((REPO_DIR / "feature_store.yaml").read_text()))
    if services.online:
        raw["online_store"] = {"type": "redis", "connection_string": redis_connection_string(services.online)}
    if services.registry:
        scheme = services.registry.split("://", 1)[0]
        if scheme not in REGISTRY_SCHEMES:
            raise ValueError(f"Feast registry {services.registry!r}: scheme {scheme!r} is not one of {REGISTRY_SCHEMES}")
        # cache_ttl 0: every open sees the latest apply, whichever process (worker, API) made it.
        raw["registry"] = {"registry_type": "sql", "path": services.registry, "cache_ttl_seconds": 0}
    config = RepoConfig(**raw)
    config.repo_path = REPO_DIR
    return config


def _set_aside_unreadable_registry(feast_dir: Path) -> None:
    """Feast's file registry (registry.db) is rewritten in place, so a run killed mid-write can leave a
    cut-off file that no later apply can parse. It holds only what `apply` declares (the definitions are
    code) and the materialization marks, which flywheel does not use (explicit windows), so an unreadable
    one is renamed aside (`registry.db.unreadable`) and logged, and the run's next apply writes it anew."""
    path = feast_dir / "registry.db"
    if not path.exists():
        return
    from feast.protos.feast.core.Registry_pb2 import Registry
    from google.protobuf.message import DecodeError

    try:
        Registry().ParseFromString(path.read_bytes())
    except DecodeError as err:
        os.replace(path, path.with_name(path.name + ".unreadable"))
        logging.getLogger("flywheel.store").warning(
            "Feast registry %s was unreadable (%s; probably a run killed mid-write): set aside as %s.unreadable, "
            "written again by the next apply", path, err, path.name)


def open_store(feast_dir: Path, services: FeastServices = FeastServices()):
    """A FeatureStore on this state folder (imports Feast lazily: it takes seconds)."""
    import_feast()
    from feast import FeatureStore

    (feast_dir / "data").mkdir(parents=True, exist_ok=True)
    if not services.registry:  # the SQL registry (Postgres) writes in transactions
        _set_aside_unreadable_registry(feast_dir)
    return FeatureStore(repo_path=str(REPO_DIR), config=build_repo_config(feast_dir, services))


def _definitions():
    """(Re)import the declarative repo module so its paths follow the current FLYWHEEL_FEAST_DIR."""
    if str(REPO_DIR) not in sys.path:
        sys.path.insert(0, str(REPO_DIR))
    module = sys.modules.get("definitions")
    return importlib.reload(module) if module else importlib.import_module("definitions")


@retry_transient("apply and materialize the feature store")
def apply_and_materialize(feast_dir: Path, start: datetime, end: datetime | None = None,
                          services: FeastServices = FeastServices()) -> dict[str, int]:
    """`feast apply` through the Python API, then materialize [start, end] into the online store.

    An explicit window, not `materialize_incremental`: a late batch carries event times older
    than the last materialization, and incremental mode would skip them. Both steps are idempotent,
    so a registry (Postgres) or online store (Redis) connection lost midway is retried whole.
    """
    store = open_store(feast_dir, services)
    defs = _definitions()
    views = [defs.image_stats, defs.audio_stats, defs.caption_stats, defs.labels]
    present = [view for view in views if (feast_dir / "data" / f"{view.name}.parquet").exists()]
    store.apply([defs.sample, *views, defs.training])
    with contextlib.redirect_stdout(io.StringIO()):  # Feast prints a coloured line per view
        store.materialize(start_date=start, end_date=end or datetime.now(timezone.utc),
                          feature_views=[view.name for view in present])
    return {view.name: len(pd.read_parquet(feast_dir / "data" / f"{view.name}.parquet")) for view in present}


@retry_transient("read the training frame from the feature store")
def get_training_frame(feast_dir: Path, entity_rows: pd.DataFrame,
                       services: FeastServices = FeastServices()) -> pd.DataFrame:
    """Point-in-time correct retrieval of the `training` feature service for (sample_id, event_timestamp) rows."""
    store = open_store(feast_dir, services)
    service = store.get_feature_service("training")
    return store.get_historical_features(entity_df=entity_rows, features=service).to_df()


def get_online_features(feast_dir: Path, sample_ids: list[str], features: list[str],
                        services: FeastServices = FeastServices()) -> pd.DataFrame:
    store = open_store(feast_dir, services)
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
