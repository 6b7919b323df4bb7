"""The embedded MLflow store (`sqlite:///…/mlflow.db`), created whole or not at all.

MLflow creates a new SQLite store's tables with its migrations, in the database file itself: a process
killed meanwhile leaves a database that every later process refuses ("table … already exists"
while it creates the tables again), so the home would need a hand-deleted `mlflow.db`. Here a new store
is created in a temporary file beside it (the same migrations, by a real client) and renamed into place:
a kill leaves no database, which the next process creates afresh, or the finished one.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from features.atomic import atomic_path, remove_orphans

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
                    tmp.unlink()  # SQLite creates the file itself
                    _create_store(f"sqlite:///{tmp}")


def _create_store(uri: str) -> None:
    """The tables and the default experiment, as MLflow's client creates them on first use (not cached:
    nothing keeps a connection to the temporary file once it is renamed)."""
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store

    store = _get_sqlalchemy_store(uri, None)
    store.engine.dispose()
