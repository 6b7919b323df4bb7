"""What every `flywheel` command shares: the console, the settings loader and the common options."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console

from flows.settings import Settings, load_settings

console = Console(width=None if sys.stdout.isatty() else 140)


def cli_settings(home: Optional[Path], params: Optional[Path]) -> Settings:
    try:
        return load_settings(home, params)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]configuration error:[/red] {err}")
        raise typer.Exit(2) from err


def require_registry_lock(settings: Settings) -> None:
    """A command that may promote stops before any work when the champion lock it would take is out of
    reach (the lock database or the Prefect server), with exit code 2: a setting that cannot work."""
    from flows.registry_locks import RegistryLockUnusable, check_registry_lock

    try:
        check_registry_lock(settings)
    except RegistryLockUnusable as err:
        console.print(f"[red]configuration error:[/red] the champion lock cannot be taken: {err}")
        raise typer.Exit(2) from err


def require_dask_cluster(settings: Settings, plain: bool) -> None:
    """A Prefect run whose data stages would go to the Dask cluster at FLYWHEEL_DASK_ADDRESS stops before any
    work when that cluster does not answer or has no worker, with exit code 2 (a --plain run never uses it)."""
    if plain or settings.dask_address is None:
        return
    from flows.dask_cluster import DaskClusterUnusable, check_cluster_of

    try:
        check_cluster_of(settings)
    except DaskClusterUnusable as err:
        console.print(f"[red]configuration error:[/red] {err}")
        raise typer.Exit(2) from err


HOME_OPTION = typer.Option(None, "--home", help="state folder (default: $FLYWHEEL_HOME or .flywheel)")
PARAMS_OPTION = typer.Option(None, "--params", help="params file (default: $FLYWHEEL_PARAMS or params.yaml)")


@contextmanager
def exit_on_user_error(what: str, *errors: type[Exception]) -> Iterator[None]:
    """Turn a bad-input error into one red line and exit code 2 instead of a traceback."""
    try:
        yield
    except errors as err:
        console.print(f"[red]{what}:[/red] {err}")
        raise typer.Exit(2) from err
