"""`flywheel quarantine|review|server|params`: looking after the quarantine, the label review queue and the
local Prefect server, and showing the effective params."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from flows.cli_common import HOME_OPTION, PARAMS_OPTION, cli_settings, console, exit_on_user_error

quarantine_app = typer.Typer(help="Rows rejected by any stage: list, inspect, re-admit once fixed.", no_args_is_help=True)


@quarantine_app.command("list")
def quarantine_list(
    batch: Optional[str] = typer.Option(None, "--batch", help="only this batch"),
    reason: Optional[str] = typer.Option(None, "--reason", help="only this reason code"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Every quarantined row with its stage, reason and detail."""
    from features.quarantine import list_quarantine

    frame = list_quarantine(cli_settings(home, params).paths.quarantine)
    if batch:
        frame = frame[frame["batch_id"] == batch]
    if reason:
        frame = frame[frame["reason"] == reason]
    if frame.empty:
        console.print("nothing quarantined" + (" for that filter" if batch or reason else ""))
        return
    table = Table("batch", "stage", "sample", "reason", "detail", "status")
    for row in frame.itertuples(index=False):
        table.add_row(str(row.batch_id), row.stage, str(row.sample_id), row.reason, str(row.detail)[:80], str(row.status))
    console.print(table)
    console.print(f"{len(frame)} row(s); per reason: " + ", ".join(f"{k}={v}" for k, v in frame["reason"].value_counts().items()))


@quarantine_app.command("show")
def quarantine_show(
    sample_id: str = typer.Argument(..., help="the quarantined sample_id"),
    batch: Optional[str] = typer.Option(None, "--batch", help="the batch, when the id occurs in several"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """The full quarantine record(s) of one row, including the row as it arrived."""
    from dataclasses import asdict

    from features.quarantine import show_quarantined

    records = show_quarantined(cli_settings(home, params).paths.quarantine, sample_id, batch)
    if not records:
        console.print(f"[red]no quarantined row {sample_id!r}[/red]")
        raise typer.Exit(2)
    for record in records:
        console.print_json(json.dumps(asdict(record), default=str))


@quarantine_app.command("readmit")
def quarantine_readmit(
    batch: str = typer.Argument(..., help="batch id the row was quarantined in"),
    sample_id: str = typer.Argument(..., help="the quarantined sample_id"),
    set_field: list[str] = typer.Option([], "--set", help="FIELD=JSON value to fix, e.g. --set label=7 (repeatable)"),
    file: list[str] = typer.Option([], "--file", help="FIELD=PATH of a fixed file, e.g. --file image=fixed.png"),
    out: Optional[Path] = typer.Option(None, "--out", help="landing folder to write (default: under the quarantine)"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Write the fixed row as a one-row landing batch that re-enters through `flywheel run`."""
    from features.quarantine import readmit

    settings = cli_settings(home, params)
    with exit_on_user_error(f"cannot re-admit {sample_id!r}", ValueError, FileExistsError, FileNotFoundError):
        fields = {k: json.loads(v) for k, v in (item.split("=", 1) for item in set_field)}
        files = {k: Path(v) for k, v in (item.split("=", 1) for item in file)}
        folder = readmit(settings.paths.quarantine, settings.paths.lake_raw, batch, sample_id, files, fields, out)
    console.print(f"wrote {folder}; run it with: flywheel run --source {folder}")


review_app = typer.Typer(help="The human review queue of low-confidence labels (Label Studio).", no_args_is_help=True)


@review_app.command("list")
def review_list(home: Optional[Path] = HOME_OPTION, params: Optional[Path] = PARAMS_OPTION) -> None:
    """Review queues per batch: where the Label Studio tasks and labelling config are."""
    settings = cli_settings(home, params)
    queues = sorted(settings.paths.review.glob("*/tasks.json")) if settings.paths.review.exists() else []
    if not queues:
        console.print("no review queue yet (the label stage writes one per batch)")
        return
    table = Table("batch", "tasks", "tasks file", "labelling config")
    for tasks in queues:
        table.add_row(tasks.parent.name, str(len(json.loads(tasks.read_text()))), str(tasks), str(tasks.parent / "labeling_config.xml"))
    console.print(table)
    console.print("Import tasks.json into a Label Studio project set up with labeling_config.xml; export JSON when done, then "
                  "`flywheel review import EXPORT.json --batch BATCH`.")


@review_app.command("import")
def review_import(
    export: Path = typer.Argument(..., help="Label Studio JSON export of completed annotations"),
    batch: str = typer.Option(..., "--batch", help="the batch whose queue was annotated"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Completed annotations become human labels in the feature store (visible from their annotation time)."""
    from flows.data_stages import stage_import_review

    settings = cli_settings(home, params)
    with exit_on_user_error(f"cannot import {export}", ValueError, FileNotFoundError, KeyError):
        count, version = stage_import_review(settings, batch, export)
    if not count:
        console.print(f"no completed annotation in {export}: nothing imported")
        return
    console.print(f"imported {count} human label(s) for batch {batch}, data version {version};"
                  " the next training run uses them")


server_app = typer.Typer(help="The one local Prefect server every flywheel home on this machine reuses (and its UI).",
                         no_args_is_help=True)


def _server_home(home: Optional[Path], params: Optional[Path]) -> Path:
    settings = cli_settings(home, params)
    assert settings.prefect_server_home is not None  # load_settings always sets it
    return settings.prefect_server_home


@server_app.command("start")
def server_start(port: int = typer.Option(4200, help="preferred port (a free one is chosen if taken)"),
                 home: Optional[Path] = HOME_OPTION, params: Optional[Path] = PARAMS_OPTION) -> None:
    """Start (or find) the machine's local Prefect server; later `flywheel run`s of every home use it.
    It lives in $FLYWHEEL_PREFECT_SERVER_HOME (default $XDG_STATE_HOME/flywheel/prefect-server)."""
    from flows.prefect_server import start_server

    server_home = _server_home(home, params)
    with console.status("starting the Prefect server …"):
        url = start_server(server_home, port)
    console.print(f"Prefect API {url}; UI {url.removesuffix('/api')} (state: {server_home})")


@server_app.command("stop")
def server_stop(home: Optional[Path] = HOME_OPTION, params: Optional[Path] = PARAMS_OPTION) -> None:
    """Stop the machine's local Prefect server (the one every home's runs use)."""
    from flows.prefect_server import stop_server

    stopped = stop_server(_server_home(home, params))
    console.print("stopped" if stopped else "no server was running")


@server_app.command("status")
def server_status(home: Optional[Path] = HOME_OPTION, params: Optional[Path] = PARAMS_OPTION) -> None:
    """Say whether the machine's local Prefect server is up, and where."""
    from flows.prefect_server import find_running_server

    server_home = _server_home(home, params)
    url = find_running_server(server_home)
    console.print(f"running: {url} (state: {server_home})" if url else
                  f"not running (state: {server_home}); the next `flywheel run` starts it")
    raise typer.Exit(0 if url else 1)


def show_params(
    defaults: bool = typer.Option(False, "--defaults", help="the code's defaults alone, not a params file's values"),
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """The effective params as YAML, every entry with its comment: the params file over the code's
    defaults, so every knob shows without a params.yaml restating it (--defaults: the defaults alone)."""
    from flows.params_text import render_defaults, render_params
    from flows.settings import EnvSettings, load_params

    if defaults:
        typer.echo(render_defaults(), nl=False)
        return
    with exit_on_user_error("configuration error", FileNotFoundError, ValueError):
        loaded = load_params(params or EnvSettings().params)
    typer.echo(render_params(loaded), nl=False)
