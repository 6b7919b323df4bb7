"""`flywheel monitor`: every drift check for a batch (or the inference log) against the champion's
training window; the results go into a run summary (`runs/<id>/summary.json`) and a rich table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from flows.cli_common import HOME_OPTION, PARAMS_OPTION, cli_settings, console, exit_on_user_error


def monitor(
    batch: Optional[str] = typer.Option(None, "--batch", help="ingested batch id, or its lake folder (default: the latest cleaned batch)"),
    log: bool = typer.Option(False, "--inference-log", help="check the inference log since the last check instead of a batch"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Run the drift checks (data, embeddings, predictions, quality, performance) and print what drifted."""
    settings = cli_settings(home, params)
    from flows.monitor_stage import latest_clean_batch, monitor_batch, monitor_inference_log
    from flows.pipeline import RunRecord, new_run_id, write_summary

    record = RunRecord(run_id=new_run_id(), source="inference-log" if log else str(batch or "latest"))
    run_dir = settings.paths.runs / record.run_id
    started = time.perf_counter()
    with exit_on_user_error("cannot monitor", FileNotFoundError, ValueError):
        with console.status("running the drift checks …"):
            if log:
                record.monitor = monitor_inference_log(settings, run_dir)
            else:
                record.batch_id = Path(batch).name if batch else latest_clean_batch(settings)
                record.monitor, _ = monitor_batch(settings, record.batch_id, run_dir)
    record.seconds["monitor"] = round(time.perf_counter() - started, 3)
    record.status = "succeeded"
    path = write_summary(settings, record)
    print_monitor(record.monitor)
    console.print(f"summary: {path}")


def print_monitor(summary: dict) -> None:
    if "checks" not in summary:
        console.print(f"{summary.get('status')}: {summary.get('detail', 'nothing to compare against')}")
        return
    table = Table(title=f"monitor: {summary['status'].upper()} (champion v{summary.get('champion')})", title_justify="left")
    for column in ("check", "status", "drifted", "evidence"):
        table.add_column(column, overflow="fold")
    for name, check in summary["checks"].items():
        drifted = [item for item, entry in check["items"].items() if entry.get("drifted")]
        evidence = check.get("reason", "") or ", ".join(
            f"{item}={entry['score']:.3g}/{entry['threshold']:.3g}" if "score" in entry else f"{item}: {', '.join(entry.get('reasons', [])) or entry.get('drop', '')}"
            for item, entry in check["items"].items() if entry.get("drifted"))
        style = {"drift": "red", "skipped": "yellow"}.get(check["status"], "green")
        table.add_row(name, f"[{style}]{check['status']}[/{style}]", ", ".join(drifted), evidence)
    console.print(table)
    if summary.get("report"):
        console.print(f"report: {summary['report']}")
