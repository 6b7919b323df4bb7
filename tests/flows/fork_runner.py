"""A process that imports flywheel and the libraries its stages use once, then forks one child per command.

tests/flows/test_kill_anywhere.py kills `flywheel run --plain` at random moments. Starting a fresh
interpreter per kill would spend most of each attempt importing torch, MLflow, Feast, GX and DVC, and
put most random moments inside those imports, where nothing is written. A forked child starts with
them imported and runs the real CLI (`flows.cli.app`) in its own process, which the test SIGKILLs.

Protocol, one JSON object per line: the parent sends {"args": [...], "log": path, "env": {...}}; this
process answers {"pid": N} once the child runs; the parent then sends {"then": "wait"} or {"then": "kill"}
(SIGKILL now, sent by this process: the child is not reaped before, so its pid cannot have been reused by
another process) and gets {"pid": N, "returncode": R} when the child ended (R is -9 after SIGKILL, as for
subprocess; 0 when it had finished before the kill). The child's stdout and stderr go to `log`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback


def _import_libraries() -> None:
    """What `flywheel run --plain` imports before and during its stages; nothing is run, so no thread is started."""
    from features.env import apply_process_environment

    apply_process_environment()
    import dvc.repo  # noqa: F401
    import sentence_transformers  # noqa: F401

    import features.store  # noqa: F401
    import features.validate  # noqa: F401
    import flows.cli  # noqa: F401
    import flows.exactly_once  # noqa: F401
    import flows.loop  # noqa: F401
    import flows.monitor_stage  # noqa: F401
    import flows.pipeline  # noqa: F401
    import models.evaluate  # noqa: F401
    import models.text  # noqa: F401
    import monitoring.reports  # noqa: F401
    from flows.prefect_runtime import preload_libraries

    preload_libraries(with_prefect=False)


def _child(request: dict) -> None:
    """Run the CLI with the request's arguments and environment; never returns."""
    code = 1
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.update(request.get("env", {}))
        from flows.cli import app

        try:
            app(request["args"], prog_name="flywheel")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    _import_libraries()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        if json.loads(sys.stdin.readline())["then"] == "kill":
            os.kill(pid, signal.SIGKILL)  # harmless on a child that ended already (a zombie until reaped)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
