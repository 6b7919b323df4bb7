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
    """Point Prefect's client at FLYWHEEL_HOME (its profile; the ephemeral API's SQLite with `server` off) and,
    with `server`, spawn or find the machine's one local server, which every home shares."""
    os.environ.setdefault("PREFECT_HOME", str(settings.paths.prefect))
    home = Path(os.environ["PREFECT_HOME"]).expanduser()
    # Prefect's ephemeral server creates its SQLite file but not missing parent folders.
    home.mkdir(parents=True, exist_ok=True)
    if "PREFECT_API_URL" in os.environ or not server:
        return PrefectStart(False, lambda: None)
    from flows.prefect_server import spawn_server

    if settings.prefect_server_home is None:
        raise ValueError("settings.prefect_server_home is unset: build the settings with flows.settings.load_settings")
    launch = spawn_server(settings.prefect_server_home)

    def wait() -> None:
        os.environ["PREFECT_API_URL"] = launch.wait()

    return PrefectStart(launch.spawned, wait)


def run_tags(settings: Settings, run_id: str | None = None):
    """Tags for the flow runs started inside: they tell this home's runs apart on the machine's shared server."""
    from prefect import tags

    return tags(*flow_run_tags(settings, run_id))


def flow_run_tags(settings: Settings, run_id: str | None = None) -> tuple[str, ...]:
    """flywheel's own tag, the home, and the run id where it is known before the flow starts."""
    return ("flywheel", f"home:{settings.paths.home}", *([f"run:{run_id}"] if run_id else []))


def preload_libraries(with_prefect: bool = True) -> None:
    """Import what the stages import (torch, MLflow, GX, Feast, Evidently), e.g. while the server boots;
    with a server already up, the stages import what they need themselves (a cached stage: nothing).

    Feast resets the DeprecationWarning filter on import, so output is quietened again after.
    """
    import models.registry  # noqa: F401
    import models.train  # noqa: F401
    import monitoring.drift  # noqa: F401
    from features.env import quiet_library_output
    from features.store import import_feast

    import_feast()  # Feast as the stages import it (features/store.py)

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
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), run_tags(settings, run_id):
        return lifecycle_flow(settings, source, run_id, reuse)
