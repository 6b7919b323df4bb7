"""What every command that runs stages prints: the run summary's tables, where to open the UIs, and the
landing batch checked before anything runs (`flywheel run`, `ingest`, `stage`, `summary`)."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from urllib.parse import urlparse

import typer
from flows.cli_common import console
from flows.cli_tables import Col, FittedTable
from flows.settings import Settings


def ui_commands(settings: Settings) -> dict[str, str]:
    """Commands that open each tool's UI on the embedded stores."""
    from flows.prefect_server import find_running_server
    from flows.run_links import DATA_DOCS_UI

    p = settings.paths
    docs = p.gx / "uncommitted" / "data_docs" / "local_site" / "index.html"
    server = find_running_server(settings.prefect_server_home) if settings.prefect_server_home else None
    return {
        # A copied command runs in the user's shell, not under features/env.py: it carries its own switches.
        "MLflow UI": f"DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true mlflow ui --backend-store-uri {shlex.quote(settings.tracking_uri)} --port 5000",
        "Prefect UI": f"open {server.removesuffix('/api')}  (running; `flywheel server stop` stops it)" if server
        else "flywheel server start   (one server for every home on this machine)",
        # Without DO_NOT_TRACK `evidently ui` spawns a process per API call that sends usage data.
        "Evidently UI": f"DO_NOT_TRACK=1 evidently ui --workspace {shlex.quote(str(p.evidently))} --port 8000",
        # Served over http, as the other UIs' links to a validation result expect (flows/run_links.DATA_DOCS_UI);
        # the site also opens from the disk: file://<site>/index.html.
        "GX Data Docs": f"python -m http.server {urlparse(DATA_DOCS_UI).port} --bind 127.0.0.1 --directory "
                        f"{shlex.quote(str(docs.parent))}  (then open {DATA_DOCS_UI})",
    }


# The run summary's tables; in a narrow terminal the lowest `keep` goes first (cli_tables.FittedTable).
DATA_COLUMNS = (Col("stage", keep=100), Col("rows in", keep=80, justify="right"), Col("rows out", keep=85, justify="right"),
                Col("quarantined", keep=90, justify="right"), Col("reasons", fold=True, keep=95),
                Col("seconds", keep=70, justify="right"))
MODEL_COLUMNS = (Col("stage", keep=100), Col("result", fold=True, keep=90), Col("seconds", keep=70, justify="right"))


def summary_tables(summary: dict) -> list[FittedTable]:
    """The run summary's tables: one row per data stage, then one per model stage that ran (when any did)."""
    data = FittedTable(DATA_COLUMNS, title=f"run {summary['run_id']}: {summary['status']} (batch {summary.get('batch_id')})")
    for name, stage in summary["stages"].items():
        reasons = ", ".join(f"{k}={v}" for k, v in stage.get("reasons", {}).items()) or ("already ingested" if stage.get("skipped") else "")
        if summary.get("cache", {}).get(name, {}).get("cached") and name != "ingest":
            reasons = f"(cached) {reasons}".strip()
        counts = ["" if stage.get(c) is None else str(stage[c]) for c in ("rows_in", "rows_out", "rows_quarantined")]
        data.add_row(name, *counts, reasons,
                     f"{summary['seconds'].get(name, 0):.1f}")
    model = FittedTable(MODEL_COLUMNS, title="model")
    from flows.stages import built_in_stages

    for stage in built_in_stages():
        name = stage.name
        if stage.summary is not None and name in summary["seconds"] and name != summary.get("failed_stage"):
            cached = "(cached) " if summary.get("cache", {}).get(name, {}).get("cached") else ""
            model.add_row(name, cached + stage.summary(summary), f"{summary['seconds'][name]:.1f}")
    return [data, model] if model.row_count else [data]


def print_summary(summary: dict, path: Path, settings: Settings) -> None:
    for table in summary_tables(summary):
        console.print(table)
    if summary.get("error"):
        console.print(f"[red]stage {summary.get('failed_stage')} failed:[/red] {summary['error']}")
    rejected = summary.get("rejection")
    if rejected:
        console.print(f"[red]batch rejected by {rejected['stage']}:[/red] {rejected['expectation']} observed "
                      f"{rejected['observed']}, bound {rejected['bound']}; monitored in this run, never trained on")
    alerts = (summary.get("loop") or {}).get("alerts")
    if alerts:
        sent = ", ".join(alerts.get("sent", [])) or "none"
        held = f"; within the cooldown already: {', '.join(alerts['suppressed'])}" if alerts.get("suppressed") else ""
        failed = f"; [red]failed: {', '.join(alerts['failed'])}[/red]" if alerts.get("failed") else ""
        console.print(f"alert ({'rejection' if summary['loop'].get('rejected') else 'drift'}): sent to {sent}{held}{failed}")
    console.print(f"summary: {path}")
    console.print("open the UIs:")
    for name, command in ui_commands(settings).items():
        console.print(f"  {name:13s} {command}", soft_wrap=True)


def landing_source(source: str) -> Path | str:
    """`--source` as the stages take it: an fsspec URI as given, a folder as an absolute path (resumable from
    any folder); a folder without a manifest exits 2, naming what would make one."""
    is_uri = "://" in source and not source.startswith("file://")
    batch: Path | str = source if is_uri else Path(source.removeprefix("file://")).absolute()
    if isinstance(batch, Path) and not (batch / "manifest.jsonl").is_file():
        console.print(f"[red]{source} is not a landing batch[/red] (no manifest.jsonl); make one with `flywheel demo-data --out {source}`")
        raise typer.Exit(2)
    return batch


def run_and_report(settings: Settings, run_id: str, status: str, work, debug: bool) -> None:
    """Run `work`, print the run's summary whatever happened, exit 0 on success and 1 when a stage failed."""
    started = time.perf_counter()
    try:
        with console.status(status):
            work()
        failed = False
    except Exception as err:  # the summary records the failing stage and the error
        if debug:
            console.print_exception(max_frames=10)
        else:
            console.print(f"[red]run failed:[/red] {type(err).__name__}: {err}\n(--debug shows the traceback)")
        failed = True
    path = settings.paths.runs / run_id / "summary.json"
    if path.exists():
        print_summary(json.loads(path.read_text()), path, settings)
    console.print(f"wall time {time.perf_counter() - started:.1f} s")
    raise typer.Exit(1 if failed else 0)
