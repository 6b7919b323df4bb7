"""`flywheel schedule` and `flywheel retrain`: the closed loop's entry points."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from flows.cli_common import HOME_OPTION, PARAMS_OPTION, cli_settings, console, exit_on_user_error, require_registry_lock


def schedule(
    once: bool = typer.Option(False, "--once", help="create or update the deployments, print them and exit (no serving)"),
    replace: bool = typer.Option(False, "--replace",
                                 help="take over deployments another home registered on this server (it is shared)"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Serve the ingest, retrain and monitor deployments on their params.yaml crons; retraining also
    starts on every drift event. Needs a real Prefect server: the local one is started (or reused)."""
    settings = cli_settings(home, params)
    from flows.prefect_runtime import prepare_prefect

    prepare_prefect(settings, server=True).wait()
    from flows.loop_flows import (
        DeploymentsOfAnotherHome,
        build_deployments,
        check_deployments_are_this_homes,
        register_deployments,
        serve_deployments,
    )

    with exit_on_user_error("bad schedule in params.yaml", ValueError):
        deployments = build_deployments(settings, params)
    if not replace:
        with exit_on_user_error("not scheduled", DeploymentsOfAnotherHome):
            check_deployments_are_this_homes(settings, deployments)
    table = Table("deployment", "cron", "triggers", title=f"schedules ({settings.params.schedule.timezone})", title_justify="left")
    for deployment in deployments:
        crons = ", ".join(s.schedule.cron for s in deployment.schedules or [])
        table.add_row(f"{deployment.flow_name}/{deployment.name}", crons, ", ".join(t.name or "" for t in deployment.triggers))
    console.print(table)
    if once:
        register_deployments(deployments)
        console.print("registered; `flywheel schedule` (without --once) runs them")
        return
    console.print("serving (Ctrl-C stops and pauses the schedules)")
    serve_deployments(deployments)


def retrain(
    reason: str = typer.Option("manual", "--reason", help="recorded with the run and the rate limit"),
    plain: bool = typer.Option(False, "--plain", help="call the stage functions directly, without Prefect"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Train on the current window → register → gate now (rate-limited by retrain.min_interval_hours)."""
    settings = cli_settings(home, params)
    require_registry_lock(settings)
    with exit_on_user_error("cannot retrain", ValueError, FileNotFoundError):
        if plain:
            from flows.loop import retrain as run_retrain

            outcome = run_retrain(settings, reason)
        else:
            from flows.prefect_runtime import prepare_prefect, run_tags

            prepare_prefect(settings, server=True).wait()
            from flows.loop_flows import retrain_flow

            with run_tags(settings):
                outcome = retrain_flow(reason, str(settings.paths.home), str(params.absolute()) if params else None)
    console.print_json(data=outcome)
