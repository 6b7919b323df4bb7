"""Starting the Prefect flow from the CLI with the embedded state folder and fast local settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flows.settings import Settings


@dataclass(frozen=True)
class PrefectStart:
    """What `prepare_prefect` set going: `booting` when it started a server (the pipeline's imports can
    overlap its boot: `preload_libraries`), and `wait`, to call once the rest of start-up is done."""

    booting: bool
    wait: Callable[[], None]


def prepare_prefect(settings: Settings, server: bool) -> PrefectStart:
    """Point Prefect at FLYWHEEL_HOME and, with `server`, spawn (or find) the reusable local server."""
    os.environ.setdefault("PREFECT_HOME", str(settings.paths.prefect))
    home = Path(os.environ["PREFECT_HOME"]).expanduser()
    # Prefect's server creates its SQLite file but not missing parent folders.
    home.mkdir(parents=True, exist_ok=True)
    if "PREFECT_API_URL" in os.environ or not server:
        return PrefectStart(False, lambda: None)
    from flows.prefect_server import spawn_server

    launch = spawn_server(home)

    def wait() -> None:
        os.environ["PREFECT_API_URL"] = launch.wait()

    return PrefectStart(launch.process is not None, wait)


def preload_libraries(with_prefect: bool = True) -> None:
    """Import what the stages import (torch, MLflow, GX, Feast, Evidently), e.g. while the server boots;
    with a server already up, the stages import what they need themselves (a cached stage: nothing).

    Feast resets the DeprecationWarning filter on import, so output is quietened again after.
    """
    import feast  # noqa: F401

    import models.registry  # noqa: F401
    import models.train  # noqa: F401
    import monitoring.drift  # noqa: F401
    from features.env import quiet_library_output

    if with_prefect:
        import flows.lifecycle  # noqa: F401
    quiet_library_output()


def run_lifecycle(settings: Settings, source: Path | str, run_id: str, server: bool = True, reuse: bool = True):
    start = prepare_prefect(settings, server)
    if start.booting:
        preload_libraries()
    start.wait()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.lifecycle import lifecycle_flow

    # The heartbeat thread costs ~1 s at the end of every flow run (STACK_NOTES); a local run needs none.
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return lifecycle_flow(settings, source, run_id, reuse)
