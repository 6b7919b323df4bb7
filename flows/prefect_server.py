"""One local Prefect server per machine, started once and reused by every FLYWHEEL_HOME.

Without PREFECT_API_URL every process starts its own ephemeral API (5-9 s); one server per state
folder cost about 285 MB each. So the server lives in a machine-wide folder (`default_server_home`,
or FLYWHEEL_PREFECT_SERVER_HOME), keeps its SQLite and log there, and every later run of any home
finds it through `server.json`; runs are told apart by their tags (home, run id), not by servers.

Start and stop hold an exclusive lock on `server.lock` (flock: the kernel drops it when its holder
dies, so a killed process leaves no lock to delete by hand). Under it a recorded server is reused
only while its process still runs the command recorded for it; a dead pid, or one the system has
since given to another program, is stale, and a new server replaces it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
LOG_FILE = "server.log"

ServerCommand = Callable[[int], list[str]]  # port -> argv of a process that serves the API at /api on that port


def default_server_home(environ: Mapping[str, str]) -> Path:
    """Where the machine's server lives unless FLYWHEEL_PREFECT_SERVER_HOME says otherwise (flows.settings):
    $XDG_STATE_HOME/flywheel/prefect-server, with XDG's default ~/.local/state when that is unset."""
    state = environ.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(state).expanduser().absolute() / "flywheel" / "prefect-server"


def prefect_server_command(port: int) -> list[str]:
    """`prefect server start` of this environment's Prefect, on 127.0.0.1:port."""
    prefect = Path(sys.executable).with_name("prefect")
    return [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]


def _healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours
        return True
    return True


def _runs_command(pid: int, argv: list[str]) -> bool:
    """Whether process `pid` is alive and still runs `argv` (not a pid the system reused for another program).
    Where /proc is missing, liveness alone is the answer."""
    try:
        os.waitpid(pid, os.WNOHANG)  # a server this process spawned and that died: reap it, or it lingers as a zombie
    except ChildProcessError:
        pass
    if not _alive(pid):
        return False
    proc = Path(f"/proc/{pid}")
    try:
        if proc.joinpath("stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X"):
            return False  # exited; not reaped yet by a parent other than this process
        cmdline = proc.joinpath("cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    # Right after exec the argument list can read empty for a moment: a live process that shows none yet is ours.
    return not cmdline or _same_command(cmdline.decode(errors="replace").split("\0")[:-1], argv)


def _same_command(running: list[str], argv: list[str]) -> bool:
    """A script started as `argv` runs as `interpreter script args…`: its arguments end the same, and the
    program's name is among the words before them."""
    program, args = Path(argv[0]).name, argv[1:]
    head = running[: len(running) - len(args)]
    return running[len(head):] == args and any(Path(word).name == program for word in head)


@contextmanager
def _locked(server_home: Path) -> Iterator[None]:
    """The machine-wide start/stop lock; released by the kernel if this process dies holding it."""
    server_home.mkdir(parents=True, exist_ok=True)
    with (server_home / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _recorded(server_home: Path) -> dict | None:
    """The recorded server while its process still runs its command; a stale record is removed."""
    state = server_home / STATE_FILE
    try:
        info = json.loads(state.read_text())
        if _runs_command(int(info["pid"]), list(info["command"])):
            return info
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):  # a half-written or old-format record: stale as well
        pass
    state.unlink(missing_ok=True)
    return None


def find_running_server(server_home: Path) -> str | None:
    """The API URL of the machine's server, if it is up and answers."""
    try:
        info = json.loads((server_home / STATE_FILE).read_text())
        pid, url, command = int(info["pid"]), info["api_url"], list(info["command"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return url if _runs_command(pid, command) and _healthy(url) else None


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
    """The machine's server, spawned by this call (`spawned`) or found recorded; it may not answer yet."""

    pid: int
    api_url: str
    server_home: Path
    command: list[str]  # what the process runs: a pid running anything else is not this server
    spawned: bool

    def wait(self, timeout: float = 90.0) -> str:
        """Block until the API answers. A server that exits, or that this call spawned and that does not
        answer in time, raises naming its log (one it spawned is stopped first)."""
        log = self.server_home / LOG_FILE
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _healthy(self.api_url):
                return self.api_url
            if not _runs_command(self.pid, self.command):
                raise RuntimeError(f"prefect server (pid {self.pid}) exited before answering; see {log}")
            time.sleep(0.2)
        if self.spawned:
            stop_server(self.server_home)
        raise RuntimeError(f"prefect server at {self.api_url} did not answer within {timeout:.0f} s; see {log}")


def spawn_server(server_home: Path, port: int = 4200, command: ServerCommand = prefect_server_command) -> ServerLaunch:
    """Find the machine's server, or start one in the background (own session: it outlives this process),
    and return at once, so the caller can do other start-up work while it boots. Two callers at once end
    with one server: the second finds the first's record under the lock."""
    with _locked(server_home):
        info = _recorded(server_home)
        if info is not None:
            return ServerLaunch(int(info["pid"]), info["api_url"], server_home, list(info["command"]), spawned=False)
        port = _free_port(port)
        argv = command(port)
        env = {**os.environ, "PREFECT_HOME": str(server_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        with (server_home / LOG_FILE).open("ab") as log:
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, cwd=server_home)
        url = f"http://127.0.0.1:{port}/api"
        state = {"pid": process.pid, "api_url": url, "command": argv, "started_at": time.time()}
        temporary = server_home / f".{STATE_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps(state))
        temporary.replace(server_home / STATE_FILE)  # whole or absent: a reader never sees half a record
        return ServerLaunch(process.pid, url, server_home, argv, spawned=True)


def start_server(server_home: Path, port: int = 4200, timeout: float = 90.0,
                 command: ServerCommand = prefect_server_command) -> str:
    return spawn_server(server_home, port, command).wait(timeout)


def stop_server(server_home: Path) -> bool:
    """Stop the machine's server (its whole process group); False when none was running."""
    with _locked(server_home):
        info = _recorded(server_home)
        (server_home / STATE_FILE).unlink(missing_ok=True)
        if info is None:
            return False
        pid = int(info["pid"])
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        command = list(info["command"])
        for _ in range(50):
            if not _runs_command(pid, command):
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return True
