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

from models.tracking_store import cache_dir, ensure_sqlite_store
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
