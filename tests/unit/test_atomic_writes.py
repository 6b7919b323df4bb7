"""Atomic writes (features/atomic.py): a writer killed at any moment, by SIGKILL or by an exception,
leaves the old file (or folder) or none, never a torn one; what a killed writer left behind is hidden
from readers and removed once its process is gone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.atomic import atomic_path, atomic_write_bytes, publish_directory, remove_orphans, staged_directory
from features.ingest import DONE_NAME, ingest_batch, list_ingested_batches
from features.io import save_json, save_parquet

PROJECT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"writer exited before the kill point: {process.stdout.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("writer never reached the kill point")
        time.sleep(0.002)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_a_json_summary_killed_at_random_moments_is_always_the_old_or_the_new(tmp_path):
    """A child rewrites a ~6 MB JSON summary in a loop (old → new → old …); SIGKILL lands at twelve
    different moments. Each time the file parses and is exactly one of the two versions."""
    path = tmp_path / "summary.json"
    old = {"version": "old", "rows": list(range(300_000))}
    new = {"version": "new", "rows": list(range(300_000, 600_000))}
    save_json(path, old)
    code = (f"from pathlib import Path\nfrom features.io import save_json\n"
            f"old = {{'version': 'old', 'rows': list(range(300_000))}}\n"
            f"new = {{'version': 'new', 'rows': list(range(300_000, 600_000))}}\n"
            f"print('ready', flush=True)\n"
            f"while True:\n    save_json(Path({str(path)!r}), new)\n    save_json(Path({str(path)!r}), old)\n")
    seen = set()
    for delay in np.linspace(0.05, 0.6, 12):
        writer = _python(code)
        assert writer.stdout.readline().strip() == b"ready"
        time.sleep(float(delay))
        _kill(writer)
        value = json.loads(path.read_text())  # never a JSONDecodeError: no torn file
        assert value in (old, new)
        seen.add(value["version"])
    assert not [p for p in tmp_path.iterdir() if p.name != "summary.json" and not p.name.startswith(".")]
    remove_orphans(tmp_path)  # the killed writers' temporary files: gone, their pids are dead
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_large_file_killed_mid_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    """SIGKILL while 64 MB of a 256 MB write are on disk: the target still holds the old bytes."""
    path = tmp_path / "weights.bin"
    path.write_bytes(b"old weights")
    code = (f"from pathlib import Path\nfrom features.atomic import atomic_path\nimport time\n"
            f"with atomic_path(Path({str(path)!r})) as tmp, tmp.open('wb') as out:\n"
            f"    for i in range(256):\n"
            f"        out.write(bytes(1 << 20))\n"
            f"        if i == 64:\n            out.flush(); print('half', flush=True); time.sleep(60)\n")
    writer = _python(code)
    assert writer.stdout.readline().strip() == b"half"
    temporary = [p for p in tmp_path.iterdir() if p.name.startswith(".weights.bin.")]
    assert len(temporary) == 1 and temporary[0].stat().st_size >= 64 << 20  # the new bytes were being written
    _kill(writer)
    assert path.read_bytes() == b"old weights"
    assert remove_orphans(tmp_path) == temporary
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_an_exception_mid_write_leaves_the_old_parquet_table(tmp_path):
    path = tmp_path / "image_stats.parquet"
    save_parquet(path, pd.DataFrame({"sample_id": ["a", "b"], "x": [1.0, 2.0]}))

    class Unwritable:  # pyarrow fails on it halfway through the table
        pass

    with pytest.raises(Exception):
        save_parquet(path, pd.DataFrame({"sample_id": ["c", "d"], "x": [3.0, Unwritable()]}))
    assert pd.read_parquet(path)["sample_id"].tolist() == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the temporary file was removed


def test_a_live_writers_temporary_file_is_not_removed(tmp_path):
    with atomic_path(tmp_path / "table.parquet") as tmp:
        tmp.write_bytes(b"in progress")
        assert remove_orphans(tmp_path) == [] and tmp.exists()
    assert (tmp_path / "table.parquet").read_bytes() == b"in progress"


def test_a_folder_replaced_through_staging_is_whole_old_or_whole_new(tmp_path):
    final = tmp_path / "batch"
    with staged_directory(final) as staging:
        (staging / "a.txt").write_text("old a")
    with pytest.raises(RuntimeError):
        with staged_directory(final) as staging:
            (staging / "a.txt").write_text("new a")
            raise RuntimeError("killed halfway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch"] and (final / "a.txt").read_text() == "old a"
    staging = tmp_path / ".staging-batch.manual"
    staging.mkdir()
    (staging / "a.txt").write_text("new a")
    publish_directory(staging, final)
    assert (final / "a.txt").read_text() == "new a" and sorted(p.name for p in tmp_path.iterdir()) == ["batch"]


def test_ingest_killed_mid_snapshot_leaves_no_batch_and_a_rerun_ingests_it_once(tmp_path, demo_batch_factory):
    """SIGKILL while ingest copies the batch's files: the lake lists no batch (the half-copied snapshot
    is a hidden staging folder), and the next ingest removes it and writes the one complete copy."""
    source = demo_batch_factory(samples=40, seed=3)
    lake = tmp_path / "lake" / "raw"
    code = (f"from pathlib import Path\nimport time\nimport features.ingest as ingest\n"
            f"copy, copied = ingest._copy_and_hash, []\n"
            f"def slow_copy(path, target, made=None):\n"
            f"    copied.append(path)\n"
            f"    if len(copied) == 10:\n        print('copying', flush=True); time.sleep(60)\n"
            f"    return copy(path, target, made)\n"
            f"ingest._copy_and_hash = slow_copy\n"
            f"ingest.ingest_batch(Path({str(source)!r}), Path({str(lake)!r}))\n")
    writer = _python(code)
    assert writer.stdout.readline().strip() == b"copying"
    _kill(writer)
    assert list_ingested_batches(lake) == []
    left = [p for p in lake.iterdir() if p.name != ".locks"]  # .locks: the ingest lock's file (features/locks.py)
    assert left and all(p.name.startswith(".staging-") for p in left)  # only hidden work, no batch folder
    result = ingest_batch(source, lake)
    assert list_ingested_batches(lake) == [result.batch_id]
    assert sorted(p.name for p in lake.iterdir() if p.name != ".locks") == [result.batch_id]  # the orphan is gone
    assert json.loads((result.batch_dir / DONE_NAME).read_text())["rows"] == result.report.rows_out


def test_orphans_of_another_host_are_left_alone(tmp_path):
    """A pid means nothing on another machine sharing the folder: only this host's dead writers are swept."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    foreign = tmp_path / f".table.parquet.pid{dead.pid}-some-other-host.abcd.tmp"
    local = tmp_path / f".table.parquet.pid{dead.pid}-{socket.gethostname()}.abcd.tmp"
    foreign.write_bytes(b"x")
    atomic_write_bytes(tmp_path / "table.parquet", b"y")
    assert remove_orphans(tmp_path) == [] and foreign.exists()
    if "." not in socket.gethostname():  # the same name from this host is swept
        local.write_bytes(b"z")
        assert remove_orphans(tmp_path) == [local]


def test_the_next_write_into_a_folder_removes_what_killed_writers_left_there(tmp_path):
    """A run killed mid-write may never write that file again (a stage record, a summary): the next atomic
    write into the same folder, of any file, sweeps the dead writer's temporary file."""
    from features.atomic import _HOST

    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".record-a.json.pid{dead.pid}-{_HOST}.x1.tmp"
    left.write_text('{"half": ')
    save_json(tmp_path / "record-b.json", {"stage": "b"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record-b.json"]
