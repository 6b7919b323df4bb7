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
An HTTP tracking URI on its own offers nothing to lock, so it is refused with what to set.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

DEFAULT_TIMEOUT_S = 120.0  # a promotion holds the lock for well under a second; a wait this long is a hang


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
    from sqlalchemy.pool import NullPool

    scheme, rest = uri.split("://", 1)
    if scheme in ("postgres", "postgresql"):  # no driver named: psycopg 3, pinned (SQLAlchemy has no "postgres" dialect)
        uri = f"postgresql+psycopg://{rest}"
    engine = sa.create_engine(uri, poolclass=NullPool)
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
