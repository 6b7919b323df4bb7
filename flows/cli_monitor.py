"""`flywheel monitor`: every drift check for a batch (or the inference log) against the champion's
training window; the results go into a run summary (`runs/<id>/summary.json`) and a rich table.

`--batch` takes a batch id, its lake folder, or the landing folder it came from (found by its content
hash). A landing folder not ingested yet is not ingested here: monitoring reads and never writes the
lake, so the command names the one that ingests it (`flywheel ingest --source DIR`) and exits 2.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from flows.cli_common import HOME_OPTION, PARAMS_OPTION, cli_settings, console, exit_on_user_error
from flows.cli_tables import Col, FittedTable


def monitor(
    batch: Optional[str] = typer.Option(None, "--batch", help="ingested batch id, its lake folder or its landing folder (default: the latest cleaned batch)"),
    log: bool = typer.Option(False, "--inference-log", help="check the inference log since the last check instead of a batch"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Run the drift checks (data, embeddings, predictions, quality, performance) and print what drifted."""
    settings = cli_settings(home, params)
    from flows.monitor_stage import monitor_batch, monitor_inference_log
    from flows.run_record import RunRecord, new_run_id, write_summary

    if not log:
        with exit_on_user_error("cannot monitor", FileNotFoundError, ValueError):
            batch_id = resolve_batch(settings, batch, home, params)

    record = RunRecord(run_id=new_run_id(), source="inference-log" if log else str(batch or "latest"))
    run_dir = settings.paths.runs / record.run_id
    started = time.perf_counter()
    with exit_on_user_error("cannot monitor", FileNotFoundError, ValueError):
        with console.status("running the drift checks …"):
            if log:
                record.monitor = monitor_inference_log(settings, run_dir)
            else:
                record.batch_id = batch_id
                record.monitor, _ = monitor_batch(settings, record.batch_id, run_dir)
    record.seconds["monitor"] = round(time.perf_counter() - started, 3)
    record.status = "succeeded"
    path = write_summary(settings.paths.runs, record)
    print_monitor(record.monitor)
    console.print(f"summary: {path}")


def resolve_batch(settings, batch: Optional[str], home: Optional[Path] = None, params: Optional[Path] = None) -> str:
    """The batch id `--batch` names: an ingested id, a folder named by one (in the lake), or a landing folder
    whose content hash is one; ValueError for a landing folder not ingested yet (naming the command that
    ingests it), FileNotFoundError for anything else, with the known batches."""
    from features.ingest import compute_batch_id, list_ingested_batches
    from flows.monitor_stage import latest_clean_batch

    if batch is None:
        return latest_clean_batch(settings)
    known = list_ingested_batches(settings.paths.lake_raw)
    folder = Path(batch).expanduser()
    if folder.is_dir():
        if (folder / "manifest.jsonl").is_file() and folder.resolve().parent != settings.paths.lake_raw.resolve():
            batch_id = compute_batch_id(folder)  # a landing folder: its id is its content hash, as ingest computes it
            if batch_id in known:
                return batch_id
            options = "".join(f" {flag} {shlex.quote(str(value))}" for flag, value in (("--home", home), ("--params", params)) if value)
            raise ValueError(f"{batch} is a landing batch (id {batch_id}) that is not ingested yet; "
                             f"`flywheel ingest --source {shlex.quote(batch)}{options}` ingests it and runs these checks "
                             f"(no training), `flywheel run --source {shlex.quote(batch)}{options}` runs the whole lifecycle")
        if folder.name in known:  # lake/raw/<id>, lake/clean/<id>, lake/inputs/<id>
            return folder.name
    elif batch in known:
        return batch
    where = f"no landing folder at {folder.absolute()}" if not folder.is_dir() else f"{folder} has no manifest.jsonl"
    raise FileNotFoundError(f"no batch {batch!r} in the lake ({settings.paths.lake_raw}) and {where}; "
                            f"ingested batches (newest last): {', '.join(known[-5:]) or 'none'}")


MONITOR_COLUMNS = (Col("check", keep=100), Col("status", keep=90), Col("drifted", fold=True, keep=80),
                   Col("evidence", fold=True, keep=85))  # in a narrow terminal the lowest `keep` goes first


def print_monitor(summary: dict) -> None:
    """The checks as a table, then where the reports are; a summary without checks in one line."""
    if "checks" not in summary:
        console.print(f"{summary.get('status')}: {summary.get('detail', 'nothing to compare against')}")
        return
    console.print(monitor_table(summary))
    for key, what in (("report", "report"), ("predictions_report", "class mix")):
        if summary.get(key):
            console.print(f"{what}: {summary[key]}")


def monitor_table(summary: dict) -> FittedTable:
    """One row per check: what drifted and the evidence (a drifted class mix names the classes that moved)."""
    from monitoring.class_mix import describe_class_moves

    table = FittedTable(MONITOR_COLUMNS, title=f"monitor: {summary['status'].upper()} (champion v{summary.get('champion')})")
    moves = describe_class_moves(summary["checks"])
    for name, check in summary["checks"].items():
        judged = {item: entry for item, entry in check["items"].items() if isinstance(entry, dict)}
        drifted = [item for item, entry in judged.items() if entry.get("drifted")]
        # `not_applicable` lists modalities with the reason as its value, not a judged entry
        evidence = check.get("reason", "") or ", ".join(
            _evidence(item, entry, moves.get(f"{name}:{item}")) for item, entry in judged.items() if entry.get("drifted")
        ) or ", ".join(item for item in check["items"] if item not in judged)
        style = {"drift": "red", "skipped": "yellow"}.get(check["status"], "green")
        # Class and feature names are text, never rich markup.
        table.add_row(name, f"[{style}]{check['status']}[/{style}]", escape(", ".join(drifted)), escape(evidence))
    return table


def _evidence(item: str, entry: dict, moved: str | None) -> str:
    if "score" not in entry:
        return f"{item}: {', '.join(entry.get('reasons', [])) or entry.get('drop', '')}"
    return f"{item}={entry['score']:.3g}/{entry['threshold']:.3g}" + (f" ({moved})" if moved else "")
