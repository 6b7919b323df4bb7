"""The embedded MLflow store is created whole or not at all: a first run killed while MLflow created its
tables used to leave an mlflow.db that every later run refused ("table ... already exists"). MLflow's
migrations run once per machine, into a cached empty store that new homes copy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import alembic.command
import pytest
from mlflow import MlflowClient

from features.env import cache_dir
from models.tracking_store import ensure_sqlite_store
from tests.conftest import PROJECT

# A first run that dies (SIGKILL) in the middle of MLflow's migrations, after some tables exist.
KILLED_MID_MIGRATION = """
import os, signal, sys
import alembic.command
from models.tracking_store import ensure_sqlite_store

def upgrade_then_die(config, revision, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

alembic.command.upgrade = upgrade_then_die
ensure_sqlite_store(sys.argv[1])
"""


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """A cache folder without the empty store: the next creation runs MLflow's migrations."""
    monkeypatch.setenv("FLYWHEEL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_store_creation_killed_mid_migration_leaves_nothing_the_next_run_trips_on(tmp_path, fresh_cache):
    database = tmp_path / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{database}"
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_MIGRATION, uri], cwd=PROJECT, capture_output=True,
                            text=True, env=os.environ)
    assert killed.returncode == -9, killed.stderr
    assert not database.exists()  # the half-made store is a hidden temporary file, never mlflow.db
    assert not list(fresh_cache.glob("mlflow-*.db"))  # nor is a half-made cached store ever taken for the empty one
    assert list(fresh_cache.glob(".mlflow-*.pid*"))  # it is a hidden temporary file the next creation sweeps

    ensure_sqlite_store(uri)
    client = MlflowClient(uri, uri)
    client.create_experiment("after-the-kill")
    assert [e.name for e in client.search_experiments()] == ["after-the-kill", "Default"]
    assert not [p.name for p in fresh_cache.iterdir() if p.name.startswith(".mlflow")]  # swept


def test_a_new_homes_store_is_a_copy_of_the_cached_one_with_its_own_default_experiment(tmp_path, fresh_cache,
                                                                                       monkeypatch):
    first = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    ensure_sqlite_store(first)
    (template,) = fresh_cache.glob("mlflow-*-empty.db")

    def no_migrations(*args, **kwargs):
        raise AssertionError("a new store ran MLflow's migrations again")

    monkeypatch.setattr(alembic.command, "upgrade", no_migrations)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # MLflow puts the default experiment's artifacts under the opener's folder
    second = f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    ensure_sqlite_store(second)
    client = MlflowClient(second, second)
    client.create_experiment("mine")
    assert [e.name for e in client.search_experiments()] == ["mine", "Default"]
    assert client.get_experiment("0").artifact_location.startswith(str(elsewhere))
    assert [e.name for e in MlflowClient(first, first).search_experiments()] == ["Default"]  # homes share nothing
    assert cache_dir() == fresh_cache


def test_a_cached_store_mlflow_refuses_is_made_again(tmp_path, fresh_cache):
    fresh_cache.mkdir()
    import mlflow

    broken = fresh_cache / f"mlflow-{mlflow.__version__}-empty.db"
    broken.write_bytes(b"not a database")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_sqlite_store(uri)
    MlflowClient(uri, uri).create_experiment("works")
    assert not broken.exists()  # set aside ...
    ensure_sqlite_store(f"sqlite:///{tmp_path / 'next' / 'mlflow.db'}")
    assert broken.read_bytes()[:15] == b"SQLite format 3"  # ... and made again for the next home


def test_an_existing_store_is_left_as_it_is(tmp_path):
    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    ensure_sqlite_store(uri)
    MlflowClient(uri, uri).create_experiment("kept")
    before = database.stat().st_mtime_ns
    ensure_sqlite_store(uri)
    assert database.stat().st_mtime_ns == before
    ensure_sqlite_store("http://127.0.0.1:5000")  # a server is none of its business
    assert not Path("127.0.0.1:5000").exists()


ALIAS_READ_WITHOUT_MLFLOW = """
import sys
from models.tracking_store import read_alias_from_file
print(read_alias_from_file(sys.argv[1], sys.argv[2], "champion"), "mlflow" in sys.modules)
"""


def test_an_alias_read_from_the_store_file_agrees_with_mlflows_client_and_needs_no_mlflow(tmp_path, monkeypatch):
    """The fully cached run keys its drift check on the champion read straight from mlflow.db (MLflow's import
    and store set-up were most of that run): the answer must be the client's, whatever the registry's state."""
    from models.registry import CHAMPION, PREVIOUS, Registry
    from models.tracking_store import read_alias_from_file

    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", "alias-test", tmp_path / "artifacts")
    client = registry.client()

    def both(alias: str = CHAMPION) -> tuple[str | None, str | None]:
        return read_alias_from_file(registry.tracking_uri, registry.model_name, alias), registry.alias_version(alias)

    assert both() == (None, None)  # no model registered yet
    client.create_registered_model(registry.model_name)
    assert both() == (None, None)  # registered, no version, no alias
    for _ in range(3):
        client.create_model_version(registry.model_name, (tmp_path / "artifacts").absolute().as_uri())
    client.set_registered_model_alias(registry.model_name, CHAMPION, "2")
    assert both() == ("2", "2") and both(PREVIOUS) == (None, None)
    client.set_registered_model_alias(registry.model_name, CHAMPION, "3")
    client.set_registered_model_alias(registry.model_name, PREVIOUS, "2")
    assert both() == ("3", "3") and both(PREVIOUS) == ("2", "2")
    client.delete_model_version(registry.model_name, "3")  # its alias goes with it
    assert both() == (None, None)
    client.create_registered_model("another-model")  # another model's alias is not this one's
    client.create_model_version("another-model", (tmp_path / "artifacts").absolute().as_uri())
    client.set_registered_model_alias("another-model", CHAMPION, "1")
    assert both() == (None, None)

    monkeypatch.chdir(tmp_path)  # a relative store path, as a user's MLFLOW_TRACKING_URI may give it
    assert read_alias_from_file("sqlite:///mlflow.db", "another-model", CHAMPION) == "1"

    read = subprocess.run([sys.executable, "-c", ALIAS_READ_WITHOUT_MLFLOW, registry.tracking_uri, "another-model"],
                          cwd=PROJECT, capture_output=True, text=True, env=os.environ, check=True)
    assert read.stdout.split() == ["1", "False"]  # read in a process that never imports MLflow


def test_a_store_the_file_cannot_answer_for_is_left_to_mlflows_client(tmp_path):
    from models.tracking_store import AliasUnreadable, read_alias_from_file

    not_a_database = tmp_path / "mlflow.db"
    not_a_database.write_text("not a database")
    unanswerable = ["http://127.0.0.1:5000", "postgresql://localhost/mlflow",  # a server: only its client knows
                    f"sqlite:///{tmp_path / 'not-made-yet.db'}",  # a home's first run: the client creates it
                    f"sqlite:///{not_a_database}"]
    empty = tmp_path / "empty.db"
    import sqlite3

    sqlite3.connect(empty).close()  # a database without MLflow's tables
    unanswerable.append(f"sqlite:///{empty}")
    for uri in unanswerable:
        with pytest.raises(AliasUnreadable):
            read_alias_from_file(uri, "model", "champion")
    assert not (tmp_path / "not-made-yet.db").exists()  # a read creates nothing
