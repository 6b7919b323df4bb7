"""A local Prefect server that flywheel starts once and reuses, instead of an ephemeral one per run.

Without PREFECT_API_URL every process starts its own ephemeral API (5-9 s). A server
started with `flywheel server start` lives on, keeps its SQLite under FLYWHEEL_HOME/prefect,
serves the Prefect UI, and every later `flywheel run` finds it through `server.json`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "server.json"


def _healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def find_running_server(prefect_home: Path) -> str | None:
    """The API URL of the server flywheel started for this state folder, if it still answers."""
    state = prefect_home / STATE_FILE
    if not state.exists():
        return None
    info = json.loads(state.read_text())
    if _alive(info["pid"]) and _healthy(info["api_url"]):
        return info["api_url"]
    return None


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free TCP port on 127.0.0.1")


@dataclass
class ServerLaunch:
    """A server process that has been spawned but may not answer yet."""

    process: subprocess.Popen | None  # None when an already-running server was found
    api_url: str
    prefect_home: Path

    def wait(self, timeout: float = 90.0) -> str:
        """Block until the API answers; record it in `server.json` for later runs."""
        if self.process is None:
            return self.api_url
        log = self.prefect_home / "server.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited with code {self.process.returncode}; see {log}")
            if _healthy(self.api_url):
                state = {"pid": self.process.pid, "api_url": self.api_url}
                (self.prefect_home / STATE_FILE).write_text(json.dumps(state))
                return self.api_url
            time.sleep(0.2)
        self.process.terminate()
        raise RuntimeError(f"prefect server did not answer within {timeout:.0f} s; see {log}")


def spawn_server(prefect_home: Path, port: int = 4200) -> ServerLaunch:
    """Start `prefect server start` in the background (own session: it outlives this process) and
    return at once, so the caller can do other start-up work while the server boots."""
    running = find_running_server(prefect_home)
    if running:
        return ServerLaunch(None, running, prefect_home)
    prefect_home.mkdir(parents=True, exist_ok=True)
    port = _free_port(port)
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = (prefect_home / "server.log").open("ab")
    prefect = Path(sys.executable).with_name("prefect")
    process = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    return ServerLaunch(process, f"http://127.0.0.1:{port}/api", prefect_home)


def start_server(prefect_home: Path, port: int = 4200, timeout: float = 90.0) -> str:
    return spawn_server(prefect_home, port).wait(timeout)


def stop_server(prefect_home: Path) -> bool:
    """Stop the server started for this state folder; False when none was running."""
    state = prefect_home / STATE_FILE
    if not state.exists():
        return False
    info = json.loads(state.read_text())
    state.unlink()
    if not _alive(info["pid"]):
        return False
    os.killpg(info["pid"], signal.SIGTERM)
    for _ in range(50):
        if not _alive(info["pid"]):
            break
        time.sleep(0.1)
    else:
        os.killpg(info["pid"], signal.SIGKILL)
    return True
