"""Starting the Prefect flow from the CLI with the embedded state folder and fast local settings."""

from __future__ import annotations

import os
from pathlib import Path

from flows.settings import Settings


def run_lifecycle(settings: Settings, source: Path, run_id: str):
    # Prefect's own SQLite lives in FLYWHEEL_HOME unless the user points elsewhere.
    os.environ.setdefault("PREFECT_HOME", str(settings.paths.prefect))
    # Prefect's server creates its SQLite file but not missing parent folders.
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    if "PREFECT_API_URL" not in os.environ:
        from flows.prefect_server import find_running_server

        url = find_running_server(Path(os.environ["PREFECT_HOME"]).expanduser())
        if url:  # reuse the local server (`flywheel server start`): no ephemeral start-up per run
            os.environ["PREFECT_API_URL"] = url
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.lifecycle import lifecycle_flow

    # The heartbeat thread costs ~1 s at the end of every flow run (STACK_NOTES); a local run needs none.
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return lifecycle_flow(settings, source, run_id)
