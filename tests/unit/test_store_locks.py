"""Store locks (features/locks.py): a second process waits for the holder and names it, gives up with a
clear message after its wait, and gets the lock the moment a SIGKILLed holder is gone."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from features.locks import StoreBusy, batch_lock, feature_store_lock

PROJECT = Path(__file__).resolve().parents[2]


def _holder(lake_raw: Path, batch: str, run: str) -> subprocess.Popen:
    """Another process that takes the batch lock as run `run` and keeps it until killed."""
    code = (f"from pathlib import Path\nimport time\nfrom features.locks import batch_lock\n"
            f"with batch_lock(Path({str(lake_raw)!r}), {batch!r}, {run!r}):\n"
            f"    print('holding', flush=True)\n    time.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)},
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "holding"
    return process


def test_a_waiting_run_names_the_holder_and_gives_up_with_a_clear_message(tmp_path, caplog):
    holder = _holder(tmp_path, "b1", "20260101T000000-abc123")
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="flywheel.locks"), pytest.raises(StoreBusy) as busy:
            with batch_lock(tmp_path, "b1", "20260101T000001-def456", wait_s=1.0):
                pytest.fail("got a lock another process holds")
        assert time.monotonic() - started >= 1.0  # it waited its wait_s before giving up
        assert "batch b1 is held by run 20260101T000000-abc123" in str(busy.value)
        assert f"pid {holder.pid}" in str(busy.value) and "wait for that run to end" in str(busy.value)
        waiting = [r.getMessage() for r in caplog.records if r.name == "flywheel.locks"]
        assert waiting and waiting[0].startswith("waiting for run 20260101T000000-abc123")
        assert str(tmp_path / ".locks" / "b1.lock") in waiting[0]
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_releases_the_lock_at_once(tmp_path):
    holder = _holder(tmp_path, "b2", "run-a")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    with batch_lock(tmp_path, "b2", "run-b", wait_s=120.0):
        assert time.monotonic() - started < 60.0  # no stale lock file to time out on: a wait would last 120 s


def test_the_holder_can_take_its_own_locks_again(tmp_path):
    """Re-entrant in the holding thread: the lake lock is taken inside a checkout that tracks."""
    with feature_store_lock(tmp_path), feature_store_lock(tmp_path):
        pass
    with feature_store_lock(tmp_path):  # and free again afterwards
        pass
