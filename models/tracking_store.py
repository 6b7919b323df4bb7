"""The embedded MLflow store (`sqlite:///…/mlflow.db`), created whole or not at all, and cheaply.

MLflow creates a new SQLite store's tables with its migrations, in the database file itself: a process
killed meanwhile leaves a database that every later process refuses ("table … already exists"
while it creates the tables again), so the home would need a hand-deleted `mlflow.db`. Here a new store
is made in a temporary file beside it and renamed into place: a kill leaves no database, which the next
process creates afresh, or the finished one.

Running the migrations takes 1.3-1.5 s, for every new home. So they run once per MLflow version on a
machine, by a real client, into an empty store kept in flywheel's cache folder (`cache_dir()`); a new
home's store is a copy of it, opened once by MLflow's client before its rename (which checks the schema
and adds MLflow's default experiment). A cached store that MLflow refuses is made again, never trusted.

A registry alias (the champion a fully cached run keys its drift check on) is read from the store's file with
sqlite3 where it can be (`read_alias_from_file`), so such a run never imports MLflow.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import unquote

from features.atomic import atomic_path, remove_orphans
from features.env import cache_dir

logger = logging.getLogger(__name__)
CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous"  # the registry's aliases (models.registry)
_DEFAULT_WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME: where flywheel's models live


def ensure_sqlite_store(uri: str) -> None:
    """Create the SQLite store `uri` names, atomically, when its file does not exist; other URIs are left alone."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(unquote(uri.removeprefix("sqlite:///")))  # sqlite:////abs/mlflow.db -> /abs/mlflow.db
    if not path.exists():
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path.with_name(path.name + ".create.lock"))):  # two first runs create it once
            if not path.exists():
                remove_orphans(path.parent)  # what a creation killed earlier left
                with atomic_path(path, suffix=".db") as tmp:
                    _new_store(tmp)


def _new_store(tmp: Path) -> None:
    """A new store at `tmp`: a copy of the cached empty one where MLflow accepts it, else migrated here (beside
    `tmp`: MLflow may keep an engine open on a refused copy's file)."""
    template = _empty_store()
    if template is not None:
        shutil.copyfile(template, tmp)
        try:
            _open_store(f"sqlite:///{tmp}")
            return
        except Exception as err:  # noqa: BLE001 - whatever MLflow refuses in a cached store, it is made again
            logger.warning("the cached empty MLflow store %s was refused (%s): making it again", template, err)
            template.unlink(missing_ok=True)
    fresh = tmp.with_name(tmp.name + ".fresh.db")  # a temporary name of this process: swept if it is killed
    _open_store(f"sqlite:///{fresh}")
    os.replace(fresh, tmp)


def _empty_store() -> Path | None:
    """The cached store with MLflow's tables and no experiment for the installed MLflow, made when missing
    (atomically, once for concurrent callers); None where the cache folder cannot be written."""
    import mlflow
    from filelock import FileLock

    folder = cache_dir()
    template = folder / f"mlflow-{mlflow.__version__}-empty.db"
    if template.is_file():
        return template
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(template.with_name(template.name + ".lock"))):
            if not template.is_file():
                remove_orphans(folder)
                with atomic_path(template, suffix=".db") as tmp:
                    tmp.unlink()
                    _open_store(f"sqlite:///{tmp}")
                    _drop_default_experiment(tmp)
    except OSError as err:
        logger.info("no cached MLflow store (%s): each new store runs MLflow's migrations", err)
        return None
    return template


def _drop_default_experiment(database: Path) -> None:
    """MLflow's client adds its default experiment (id 0) to a store without one, with the artifact folder
    of the process that opens it: each home's first client gives it its own, not the cache's creator's."""
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM experiments WHERE experiment_id = 0")
    connection.close()


def _open_store(uri: str) -> None:
    """Open the store as MLflow's client does on first use: the tables made or their schema checked, the default
    experiment added (not cached: nothing keeps a connection to a temporary file once it is renamed)."""
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store

    store = _get_sqlalchemy_store(uri, None)
    store.engine.dispose()


class AliasUnreadable(LookupError):
    """The store's file cannot answer an alias read on its own (not an embedded store, no file yet, another
    schema, locked): ask MLflow's client."""


def read_alias_from_file(uri: str, model_name: str, alias: str) -> str | None:
    """The version `alias` of `model_name` points at in the embedded store `uri`, read from the database file
    with sqlite3 (None: unset, or the model not registered), without importing MLflow, whose import and store
    set-up were about 2 s of a 3.3 s fully cached run (benchmarks/cached_run.py). The query reads the table
    MLflow's own alias lookup reads (`registered_model_aliases`, in MLflow's default workspace), read-only;
    raises AliasUnreadable wherever the file cannot say (then MLflow's client must). The answer equals
    `Registry.alias_version`'s (tests/unit/test_tracking_store.py checks both on the same store)."""
    if not uri.startswith("sqlite:///"):
        raise AliasUnreadable(f"{uri} is not an embedded store")
    path = Path(unquote(uri.removeprefix("sqlite:///")))
    if not path.is_file():
        raise AliasUnreadable(f"{path} does not exist yet")
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)  # sqlite:///x.db: relative
    except sqlite3.Error as err:
        raise AliasUnreadable(f"{path}: {err}") from err
    try:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(registered_model_aliases)")}
        if not {"name", "alias", "version"} <= columns:
            raise AliasUnreadable(f"{path} has no registered_model_aliases table of the known schema")
        query = "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?"
        arguments: tuple[str, ...] = (model_name, alias)
        if "workspace" in columns:  # MLflow 3's workspaces: flywheel's models live in the default one
            query, arguments = query + " AND workspace = ?", (*arguments, _DEFAULT_WORKSPACE)
        found = connection.execute(query, arguments).fetchall()
    except sqlite3.Error as err:  # locked past the timeout, or a file that is not a database
        raise AliasUnreadable(f"{path}: {err}") from err
    finally:
        connection.close()
    return str(found[0][0]) if found else None

