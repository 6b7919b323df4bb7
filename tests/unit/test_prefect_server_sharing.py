"""One local Prefect server per machine: found by every home, one after concurrent starts, stale records and
locks recovered without hand deletion. A stand-in server (Python's http.server answering /api/health) takes
Prefect's place, so these run in seconds; tests/flows/test_prefect_server.py starts the real one."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.prefect_server import (
    LOCK_FILE,
    STATE_FILE,
    _locked,
    default_server_home,
    find_running_server,
    spawn_server,
    start_server,
    stop_server,
)
from flows.settings import load_settings
from tests.conftest import PROJECT


def fake_server(port: int) -> list[str]:
    """A process that serves its working folder (the server home, which holds api/health) on `port`."""
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


@pytest.fixture
def server_home(tmp_path):
    home = tmp_path / "server"
    (home / "api").mkdir(parents=True)
    (home / "api" / "health").write_text("true")
    yield home
    stop_server(home)


def _start_and_report(server_home: str, barrier, out) -> None:
    barrier.wait()  # both processes ask at the same moment
    out.put(start_server(Path(server_home), port=0, timeout=60, command=fake_server))


def _server_processes(server_home: Path) -> list[int]:
    """Live processes running the stand-in server in `server_home` (their working folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if b"http.server" in cmd and cwd == str(server_home):
            found.append(int(proc.name))
    return found


def _wait_until_gone(pid: int) -> None:
    """Reap `pid` (a child of this process: start_server spawned it here), or return if it was reaped already."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def test_the_server_home_is_machine_wide_not_per_flywheel_home(tmp_path, monkeypatch):
    assert default_server_home({"XDG_STATE_HOME": "/var/state"}) == Path("/var/state/flywheel/prefect-server")
    assert default_server_home({}) == Path("~/.local/state/flywheel/prefect-server").expanduser()
    monkeypatch.delenv("FLYWHEEL_PREFECT_SERVER_HOME", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    one, two = (load_settings(tmp_path / name, PROJECT / "params.yaml") for name in ("home-a", "home-b"))
    assert one.prefect_server_home == two.prefect_server_home == tmp_path / "state" / "flywheel" / "prefect-server"
    monkeypatch.setenv("FLYWHEEL_PREFECT_SERVER_HOME", str(tmp_path / "mine"))
    assert load_settings(tmp_path / "home-a", PROJECT / "params.yaml").prefect_server_home == tmp_path / "mine"


def test_a_second_start_reuses_the_running_server_and_stop_stops_it(server_home):
    url = start_server(server_home, port=0, command=fake_server)
    assert find_running_server(server_home) == url
    again = spawn_server(server_home, command=fake_server)
    assert not again.spawned and again.wait() == url
    assert len(_server_processes(server_home)) == 1
    assert stop_server(server_home)
    assert find_running_server(server_home) is None and not _server_processes(server_home)
    assert not stop_server(server_home)


def test_two_homes_started_at_once_end_with_one_server(server_home):
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(2), context.Queue()
    starters = [context.Process(target=_start_and_report, args=(str(server_home), barrier, out)) for _ in range(2)]
    for process in starters:
        process.start()
    urls = {out.get(timeout=90) for _ in starters}
    for process in starters:
        process.join(timeout=30)
    assert len(urls) == 1 and find_running_server(server_home) in urls
    assert len(_server_processes(server_home)) == 1


def test_a_record_of_a_killed_server_is_replaced_by_a_new_server(server_home):
    url = start_server(server_home, port=0, command=fake_server)
    (old,) = _server_processes(server_home)
    os.killpg(old, signal.SIGKILL)
    _wait_until_gone(old)  # SIGKILL is delivered, not awaited: a moment later the process can still be running
    assert find_running_server(server_home) is None
    fresh = spawn_server(server_home, port=0, command=fake_server)
    assert fresh.spawned and fresh.pid != old
    assert fresh.wait() and find_running_server(server_home) == fresh.api_url
    assert url  # the first one answered before it was killed


def test_a_recorded_pid_now_running_another_program_is_stale_and_left_alone(server_home):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        # Popen returns while the kernel may still be laying out the new program's arguments: until then its
        # /proc cmdline reads empty, which flywheel takes for a server of its own just started (seen once, on
        # 2 busy cores). The case here is a pid that already runs another program.
        cmdline = Path(f"/proc/{other.pid}/cmdline")
        deadline = time.monotonic() + 30
        while cmdline.exists() and not cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        record = {"pid": other.pid, "api_url": "http://127.0.0.1:9/api", "command": fake_server(9)}
        (server_home / STATE_FILE).write_text(json.dumps(record))
        assert find_running_server(server_home) is None
        launch = spawn_server(server_home, port=0, command=fake_server)
        assert launch.spawned and launch.pid != other.pid
        launch.wait()
        assert other.poll() is None  # the unrelated process was not stopped
    finally:
        other.kill()
        other.wait()


def test_a_lock_held_by_a_killed_process_does_not_block_the_next_start(server_home):
    context = multiprocessing.get_context("fork")
    locked = context.Event()

    def hold_the_lock() -> None:
        with _locked(server_home):
            locked.set()
            signal.pause()

    holder = context.Process(target=hold_the_lock)
    holder.start()
    assert locked.wait(30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    assert (server_home / LOCK_FILE).exists()  # left behind, and harmless
    assert start_server(server_home, port=0, timeout=60, command=fake_server)


def test_a_half_written_record_is_stale(server_home):
    (server_home / STATE_FILE).write_text('{"pid": ')
    assert find_running_server(server_home) is None
    assert spawn_server(server_home, port=0, command=fake_server).spawned
