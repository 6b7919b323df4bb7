"""The embedded MLflow store is created whole or not at all: a first run killed while MLflow created its
tables used to leave an mlflow.db that every later run refused ("table ... already exists")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

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


def test_a_store_creation_killed_mid_migration_leaves_nothing_the_next_run_trips_on(tmp_path):
    database = tmp_path / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{database}"
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_MIGRATION, uri], cwd=PROJECT, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert not database.exists()  # the half-made store is a hidden temporary file, never mlflow.db
    assert [p.name for p in database.parent.iterdir() if p.name.startswith(".mlflow.db.pid")]

    ensure_sqlite_store(uri)
    client = MlflowClient(uri, uri)
    client.create_experiment("after-the-kill")
    assert [e.name for e in client.search_experiments()] == ["after-the-kill", "Default"]
    assert not [p.name for p in database.parent.iterdir() if p.name.startswith(".mlflow.db.pid")]  # swept


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
