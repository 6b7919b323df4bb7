"""Locks on the stores that runs of one FLYWHEEL_HOME share: a batch in the lake, the feature store, the
lake's DVC repo. Two `flywheel run`s on the same batch then ingest it once and never write the same
folder or table together; a run that has to wait says who it waits for.

A lock is a `filelock` (fcntl on POSIX) on a file beside the store, so it serialises processes on one
host and threads in one process, is re-entrant in the thread that holds it, and is released by the
operating system when its holder dies (a SIGKILLed run never leaves a stale lock). The holder writes
who it is (run, pid, host, since when) into `<lock>.holder`, which waiters quote.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from features.atomic import atomic_write_text

logger = logging.getLogger("flywheel.locks")

WAIT_S = 3600.0  # longest wait for a store another run holds: a whole lifecycle run on the CPU takes minutes
REPORT_EVERY_S = 60.0  # while waiting, say so again this often
LOCKS_DIR = ".locks"  # beside the lake's batch folders; dot-named, so no batch listing or DVC output sees it

_run: ContextVar[str | None] = ContextVar("flywheel_lock_run", default=None)


class StoreBusy(RuntimeError):
    """Another run held a store for longer than this run was willing to wait."""


def _holder_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".holder")


def _describe_holder(lock_path: Path) -> str:
    try:
        holder = json.loads(_holder_path(lock_path).read_text())
    except (OSError, ValueError):
        return "another process"
    run = f"run {holder['run']}" if holder.get("run") else "a process"
    return f"{run} (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')})"


@contextmanager
def store_lock(lock_path: Path, store: str, wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold the lock on `store` (a phrase for messages, e.g. "the feature store") for the block.

    When another run holds it, a warning names that run and the lock, and is repeated every
    REPORT_EVERY_S while waiting; after `wait_s` StoreBusy says the same and what to do.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), is_singleton=True)  # one object per path: re-entrant in its thread
    nested = lock.is_locked
    try:
        lock.acquire(timeout=0)
    except Timeout:
        started = time.monotonic()
        while True:
            waited = time.monotonic() - started
            if waited >= wait_s:
                raise StoreBusy(
                    f"{store} is held by {_describe_holder(lock_path)}: lock {lock_path} not free after {waited:.0f} s;"
                    " wait for that run to end (or stop it), then run again") from None
            logger.warning("waiting for %s holding %s (%s), %.0f s so far", _describe_holder(lock_path), lock_path,
                           store, waited)
            try:
                lock.acquire(timeout=min(REPORT_EVERY_S, wait_s - waited))
                break
            except Timeout:
                continue
    try:
        if not nested:
            atomic_write_text(_holder_path(lock_path), json.dumps({
                "run": _run.get(), "pid": os.getpid(), "host": socket.gethostname(), "store": store,
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        yield
    finally:
        if not nested:
            _holder_path(lock_path).unlink(missing_ok=True)
        lock.release()


@contextmanager
def batch_lock(lake_raw: Path, batch_id: str, run_id: str | None = None, wait_s: float = WAIT_S) -> Iterator[None]:
    """The lock on one batch's folders in the lake (raw, clean, model inputs) for a whole run; the locks
    this run takes meanwhile name `run_id` as their holder."""
    token = _run.set(run_id) if run_id else None
    try:
        with store_lock(lake_raw / LOCKS_DIR / f"{batch_id}.lock", f"batch {batch_id}", wait_s):
            yield
    finally:
        if token is not None:
            _run.reset(token)


def ingest_lock(lake_raw: Path, batch_id: str):
    """Held while a batch's snapshot is checked and written: two ingests of the same bytes write it once."""
    return store_lock(lake_raw / LOCKS_DIR / f"{batch_id}.ingest.lock", f"the ingest of batch {batch_id}")


def feature_store_lock(feast_dir: Path):
    """Held while a run rewrites the offline tables and materializes: read-modify-write of a parquet
    table and Feast's registry and online store take one writer at a time."""
    return store_lock(feast_dir / "feature_store.lock", "the feature store")


def lake_repo_lock(home: Path):
    """Held around each DVC operation on the lake repo (add, push, checkout)."""
    return store_lock(home / ".dvc" / "tmp" / "flywheel-lake.lock", "the lake's DVC repo")
