"""A lock around read-check-set of the registry's aliases: MLflow's compare-and-set that MLflow lacks.

MLflow aliases are last-writer-wins (STACK_NOTES: 12 concurrent writers, no error), so two gates
finishing together could both read "champion is v1", both pass, and both move the alias. Every
promotion and rollback therefore holds a lock for the whole read → check → set → re-read:
- the embedded store (`sqlite:///…/mlflow.db`) or any shared folder (`file:///…`): a file lock
  (`filelock`, fcntl on POSIX) beside it, which serialises threads and processes on one host;
- a Postgres backend store (`postgresql://…`, the MLflow server's database in the compose stack):
  a session-level advisory lock, which serialises promoters on any host and is released by the
  server if the holder dies. It needs a Postgres driver (psycopg) and the database URI, given as
  `FLYWHEEL_REGISTRY_LOCK_URI` when the tracking URI is the HTTP server's.
An HTTP tracking URI on its own offers nothing to lock: which lock guards it then (the orchestrator's,
or one under FLYWHEEL_HOME) is chosen at the entry point (`flows.registry_locks`) and handed to the
registry as a `LockFactory`; this module stays free of any orchestrator.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import unquote, urlparse

DEFAULT_TIMEOUT_S = 120.0  # a promotion holds the lock for well under a second; a wait this long is a hang
# Postgres drivers SQLAlchemy can lock through, by the `+driver` of the URI ("": psycopg 3, which is pinned).
POSTGRES_DRIVERS = {"": "psycopg", "psycopg": "psycopg", "psycopg2": "psycopg2", "pg8000": "pg8000"}
ACCEPTED = ("postgresql://user@host:5432/db (a Postgres advisory lock; drivers: psycopg, psycopg2, pg8000), "
            "file:///folder (an existing, writable folder every promoter shares) or sqlite:///path/mlflow.db "
            "(a file lock beside it)")

LockFactory = Callable[[str], AbstractContextManager[None]]  # registered model name -> the held lock


class LockUnavailable(RuntimeError):
    """The champion lock could not be taken in time (another promotion holds it)."""


def lock_file_for(lock_uri: str, model_name: str) -> Path | None:
    """The lock file for a SQLite or file URI (None for a Postgres URI)."""
    parsed = urlparse(lock_uri)
    safe_name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_name)
    if parsed.scheme == "sqlite":
        database = Path(unquote(lock_uri.removeprefix("sqlite:///"))).absolute()  # sqlite:////abs or sqlite:///rel
        return database.with_name(f"{database.name}.{safe_name}.champion.lock")
    if parsed.scheme in ("", "file"):
        folder = Path(unquote(parsed.path if parsed.scheme else lock_uri))
        return folder / f"{safe_name}.champion.lock"
    if parsed.scheme.startswith("postgres"):
        return None
    raise ValueError(
        f"cannot lock the registry through {lock_uri!r}: set FLYWHEEL_REGISTRY_LOCK_URI to the MLflow server's "
        "postgresql:// backend store URI, or to a file:///folder on storage every promoter shares"
    )


def locks_itself(store_uri: str) -> bool:
    """Whether a tracking store offers its own lock: a local SQLite or file store, or a Postgres database."""
    scheme = urlparse(store_uri).scheme
    return scheme in ("", "file", "sqlite") or scheme.split("+")[0] in ("postgres", "postgresql")


def check_lock_uri(lock_uri: str) -> None:
    """Refuse, naming the value and what is accepted, a lock URI that cannot work: an unknown scheme, a
    Postgres driver that is not installed, a folder that does not exist or is not writable. No I/O beyond
    the local file system: reaching a database is `probe_lock`'s job."""
    parsed = urlparse(lock_uri)
    scheme, _, driver = parsed.scheme.partition("+")
    if scheme in ("postgres", "postgresql"):
        module = POSTGRES_DRIVERS.get(driver)
        if module is None or importlib.util.find_spec(module) is None:
            raise ValueError(f"FLYWHEEL_REGISTRY_LOCK_URI={lock_uri!r} names Postgres driver "
                             f"{driver or 'psycopg'!r}, which {'is not installed' if module else 'cannot lock'}; "
                             f"accepted: {ACCEPTED}")
        return
    if parsed.scheme not in ("", "file", "sqlite"):
        raise ValueError(f"FLYWHEEL_REGISTRY_LOCK_URI={lock_uri!r}: unknown scheme {parsed.scheme!r}; accepted: {ACCEPTED}")
    folder = lock_file_for(lock_uri, "check").parent  # type: ignore[union-attr]  # not Postgres: a file
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        state = "is not a writable folder" if folder.exists() else "does not exist"
        raise ValueError(f"FLYWHEEL_REGISTRY_LOCK_URI={lock_uri!r}: {folder} {state}; accepted: {ACCEPTED}")


def probe_lock(lock_uri: str, timeout_s: float = 10.0) -> None:
    """Reach what the lock locks (the Postgres server; the lock file's folder, made if missing), or raise
    ValueError saying what failed: at start-up, so a run does not train first and fail at the gate."""
    path = lock_file_for(lock_uri, "probe")
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot make the registry lock's folder {path.parent} for {lock_uri!r}: {err}") from err
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise ValueError(f"the registry lock's folder {path.parent} (from {lock_uri!r}) is not writable")
        return
    import sqlalchemy as sa

    seconds = max(1, int(timeout_s))
    connect_args = {"timeout": seconds} if "+pg8000" in lock_uri else {"connect_timeout": seconds}
    engine = sa.create_engine(_sqlalchemy_uri(lock_uri), poolclass=_null_pool(), connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as err:
        raise ValueError(f"cannot reach the registry lock's database {engine.url.render_as_string(hide_password=True)} "
                         f"(FLYWHEEL_REGISTRY_LOCK_URI or the tracking URI): {str(err).splitlines()[0]}") from err
    finally:
        engine.dispose()


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


def _sqlalchemy_uri(uri: str) -> str:
    scheme, rest = uri.split("://", 1)
    if scheme in ("postgres", "postgresql"):  # no driver named: psycopg 3, pinned (SQLAlchemy has no "postgres" dialect)
        return f"postgresql+psycopg://{rest}"
    return uri


def advisory_key(model_name: str) -> int:
    """A stable signed 64-bit key per registered model, for pg_advisory_lock."""
    return int.from_bytes(hashlib.sha256(f"flywheel-champion:{model_name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def champion_lock(lock_uri: str, model_name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    path = lock_file_for(lock_uri, model_name)
    if path is None:
        with _postgres_advisory_lock(lock_uri, model_name, timeout_s):
            yield
        return
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=timeout_s):
            yield
    except Timeout as err:
        raise LockUnavailable(f"another promotion has held {path} for over {timeout_s:.0f} s") from err


@contextmanager
def _postgres_advisory_lock(uri: str, model_name: str, timeout_s: float) -> Iterator[None]:
    """`pg_advisory_lock` on its own connection, held until the block ends (lock_timeout bounds the wait)."""
    import sqlalchemy as sa
    from sqlalchemy.exc import OperationalError

    engine = sa.create_engine(_sqlalchemy_uri(uri), poolclass=_null_pool())
    key = advisory_key(model_name)
    try:
        with engine.connect() as conn:
            # At least 1 ms: lock_timeout = 0 would mean "wait forever".
            conn.execute(sa.text(f"SET lock_timeout = {max(1, int(timeout_s * 1000))}"))
            try:
                conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            except OperationalError as err:
                raise LockUnavailable(f"advisory lock {key} on {engine.url.host} not granted in {timeout_s:.0f} s") from err
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
    finally:
        engine.dispose()
