"""Starting the Prefect flow from the CLI with the embedded state folder and fast local settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from flows.settings import Settings


def prepare_prefect(settings: Settings, server: bool) -> Callable[[], None]:
    """Point Prefect at FLYWHEEL_HOME and, with `server`, spawn (or find) the reusable local server.

    Returns a function to call once the rest of start-up is done: it waits for the server,
    so its boot overlaps with importing the pipeline's libraries instead of adding to it.
    """
    os.environ.setdefault("PREFECT_HOME", str(settings.paths.prefect))
    home = Path(os.environ["PREFECT_HOME"]).expanduser()
    # Prefect's server creates its SQLite file but not missing parent folders.
    home.mkdir(parents=True, exist_ok=True)
    if "PREFECT_API_URL" in os.environ or not server:
        return lambda: None
    from flows.prefect_server import spawn_server

    launch = spawn_server(home)

    def ready() -> None:
        os.environ["PREFECT_API_URL"] = launch.wait()

    return ready


def preload_libraries(with_prefect: bool = True) -> None:
    """Import what the stages import (torch, MLflow, GX, Feast, Evidently), e.g. while the server boots.

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
    ready = prepare_prefect(settings, server)
    preload_libraries()
    ready()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.lifecycle import lifecycle_flow

    # The heartbeat thread costs ~1 s at the end of every flow run (STACK_NOTES); a local run needs none.
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return lifecycle_flow(settings, source, run_id, reuse)
