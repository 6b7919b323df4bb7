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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features.atomic import atomic_write_text
from features.io import save_table
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


# One parquet file per batch and table (`data/<table>/<batch>.parquet`), all with the table's schema: a run
# writes its own batch's file and reads no other, so its time and memory, and what DVC stores and pushes of
# `feast/data` per run, do not grow with the batches before it (one file per table, rewritten whole by each
# run, made every run read, rewrite and version the whole history). Feast reads each table's folder by glob.
_KEY_TYPES = {"sample_id": pa.string(), "event_timestamp": pa.timestamp("ns", tz="UTC"), "batch_id": pa.string()}
_VALUE_TYPES = {  # a column not named here is a float32 statistic
    **dict.fromkeys(CATEGORICAL_FEATURES, pa.string()),
    "label": pa.int64(), "label_source": pa.string(), "label_confidence": pa.float64(), "label_votes": pa.string(),
}
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    table: pa.schema([*((key, _KEY_TYPES[key]) for key in KEYS),
                      *((name, _VALUE_TYPES.get(name, pa.float32())) for name in columns)])
    for table, columns in TABLE_COLUMNS.items()
}


def _legacy_file(feast_dir: Path, table: str) -> Path:
    """Where an earlier flywheel kept the whole table as one file."""
    return feast_dir / "data" / f"{table}.parquet"


def table_dir(feast_dir: Path, table: str) -> Path:
    """The folder of a feature table's per-batch parquet files (Feast's source reads `<folder>/*.parquet`)."""
    if table not in TABLE_COLUMNS:
        raise ValueError(f"unknown feature table {table!r}; the tables are {sorted(TABLE_COLUMNS)}")
    return feast_dir / "data" / table


def batch_file(feast_dir: Path, table: str, batch_id: str) -> Path:
    """A batch's file in a table: its id as the name when that is a plain file name, else a slug and a hash."""
    from features.clean_row import output_stem

    return table_dir(feast_dir, table) / f"{output_stem(batch_id)}.parquet"


def table_files(feast_dir: Path, table: str) -> list[Path]:
    """The table's batch files, by name (temporary files of a write in progress start with a dot: skipped)."""
    folder = table_dir(feast_dir, table)
    return sorted(path for path in folder.glob("*.parquet") if not path.name.startswith(".")) if folder.is_dir() else []


def _as_table(frame: pd.DataFrame, table: str, fill_missing: bool = False) -> pa.Table:
    """The frame's columns of `table` in the table's schema, so Feast's glob over the folder reads every file
    alike; `fill_missing`: a column the frame lacks (a file written before it existed) is nulls, else an error."""
    schema = TABLE_SCHEMAS[table]
    missing = [name for name in schema.names if name not in frame.columns]
    if missing and not fill_missing:
        raise ValueError(f"the {table} rows lack the column(s) {missing}; the table has {schema.names}")
    columns = {}
    for field in schema:
        values = frame[field.name] if field.name in frame.columns else pd.Series([None] * len(frame), dtype=object)
        if pa.types.is_timestamp(field.type):
            values = pd.to_datetime(values, utc=True)
        columns[field.name] = pa.array(values, type=field.type, from_pandas=True)
    return pa.table(columns, schema=schema)


def _split_legacy_table(feast_dir: Path, table: str) -> None:
    """A table an earlier flywheel kept as one file (`data/<table>.parquet`) becomes one file per batch, then the
    old file goes; a kill midway leaves it, and the next write splits it again (each batch file is atomic)."""
    legacy = _legacy_file(feast_dir, table)
    if not legacy.exists():
        return
    frame = pd.read_parquet(legacy)
    for batch_id, rows in frame.groupby("batch_id", sort=False, dropna=False):
        save_table(batch_file(feast_dir, table, str(batch_id)), _as_table(rows, table, fill_missing=True))
    legacy.unlink()


SCHEMA_MARK = ".schema"  # in a table's folder: the schema all its files have (dot-named: no glob of Feast's sees it)


def _upgrade_schemas(feast_dir: Path, table: str) -> None:
    """Batch files written before a column was added (their schema from the file's footer) are written again
    with it, as nulls: Feast's reader takes the folder's files as one table of one schema. The folder's mark
    names the schema they were last checked against, so their footers are read only when it changes."""
    schema = TABLE_SCHEMAS[table]
    mark = table_dir(feast_dir, table) / SCHEMA_MARK
    if mark.exists() and mark.read_text() == schema.to_string():
        return
    for path in table_files(feast_dir, table):
        if not pq.read_schema(path).remove_metadata().equals(schema):
            save_table(path, _as_table(pd.read_parquet(path), table, fill_missing=True))
    atomic_write_text(mark, schema.to_string())


def split_legacy_tables(feast_dir: Path) -> None:
    """Every table an earlier flywheel kept as one file, split by batch (a stat per table when there is none):
    Feast's sources read the tables' folders, so a store is split before Feast reads it."""
    legacy = [table for table in TABLE_COLUMNS if _legacy_file(feast_dir, table).exists()]
    if legacy:
        from features.locks import feature_store_lock

        with feature_store_lock(feast_dir):
            for table in legacy:
                _split_legacy_table(feast_dir, table)


def upsert_batch_table(feast_dir: Path, table: str, batch_id: str, frame: pd.DataFrame) -> Path:
    """Replace this batch's rows in a feature table (its own file); other batches' files are not read or
    written. Re-running a batch never duplicates. Callers hold `features.locks.feature_store_lock`."""
    _split_legacy_table(feast_dir, table)
    _upgrade_schemas(feast_dir, table)
    path = batch_file(feast_dir, table, batch_id)
    save_table(path, _as_table(frame.assign(batch_id=batch_id), table))
    return path


def has_feature_table(feast_dir: Path, table: str) -> bool:
    """Whether the table has a batch (or an earlier flywheel's single file)."""
    return bool(table_files(feast_dir, table)) or _legacy_file(feast_dir, table).exists()


def feature_table_rows(feast_dir: Path, table: str) -> int:
    """Rows in a table, from its files' footers (no data read)."""
    legacy = _legacy_file(feast_dir, table)
    files = table_files(feast_dir, table) + ([legacy] if legacy.exists() else [])
    return sum(pq.read_metadata(path).num_rows for path in files)


def read_feature_table(feast_dir: Path, table: str, batch_ids: list[str] | None = None,
                       columns: list[str] | None = None, where: pc.Expression | None = None) -> pd.DataFrame:
    """A table's rows, of some batches (only their files are read) or of all, with the table's columns (or
    `columns`); `where`, an Arrow filter on the table's columns, is applied file by file, so memory holds the
    rows it keeps (and one file's), not the table. An earlier flywheel's single file is read too, until a write
    splits it."""
    schema = TABLE_SCHEMAS[table]
    wanted = columns or schema.names
    read = list(dict.fromkeys([*wanted, "batch_id"]))
    if batch_ids is None:
        files = table_files(feast_dir, table)
    else:
        files = [path for path in (batch_file(feast_dir, table, str(b)) for b in dict.fromkeys(batch_ids)) if path.exists()]

    def scan(paths: list[Path]) -> pa.Table:  # file by file, in the table's schema (a column a file lacks: nulls)
        return ds.dataset([str(path) for path in paths], schema=schema, format="parquet").to_table(columns=read, filter=where)

    parts = [scan(files)] if files else []
    legacy = _legacy_file(feast_dir, table)
    if legacy.exists():  # until a write splits it; a batch already split (a split under way) is read from its file
        old = scan([legacy])
        split = {str(value) for part in parts for value in part["batch_id"].unique().to_pylist()}
        keep = set(map(str, batch_ids)) - split if batch_ids is not None else None
        ids = old["batch_id"].cast(pa.string())
        old = old.filter(pc.is_in(ids, value_set=pa.array(sorted(keep), pa.string())) if keep is not None
                         else pc.invert(pc.is_in(ids, value_set=pa.array(sorted(split), pa.string()))))
        parts.append(old)
    joined = pa.concat_tables(parts).select(wanted) if parts else schema.empty_table().select(wanted)
    return joined.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)  # a label with nulls stays an integer


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
    split_legacy_tables(feast_dir)
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
    present = [view for view in views if has_feature_table(feast_dir, view.name)]
    store.apply([defs.sample, *views, defs.training])
    with contextlib.redirect_stdout(io.StringIO()):  # Feast prints a coloured line per view
        store.materialize(start_date=start, end_date=end or datetime.now(timezone.utc),
                          feature_views=[view.name for view in present])
    return {view.name: feature_table_rows(feast_dir, view.name) for view in present}


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
    """The stats tables of some batches joined on sample_id, straight from their batches' parquet files."""
    frames = []
    for table in ("image_stats", "audio_stats", "caption_stats"):
        if not has_feature_table(feast_dir, table):
            raise FileNotFoundError(f"feature table {table_dir(feast_dir, table)} does not exist; run the transform stage first")
        frame = read_feature_table(feast_dir, table, batch_ids, ["sample_id", *TABLE_COLUMNS[table]])
        frames.append(frame.set_index("sample_id"))
    return pd.concat(frames, axis=1).reset_index()
